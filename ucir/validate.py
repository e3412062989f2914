"""Check a workflow configuration before any job runs: the JSON schema, the dataset folders, then every run's
settings (ucir.config.RunConfig.check). Each error is one ConfigError naming the key, the bad value and what is
allowed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .config import ENUMS, METHODS, REPLACED, ConfigError
from .grid import Run, check_dataset_paths, expand_runs
from .report import EXPERIMENT_PLOTS


def _allowed(schema: dict) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "properties" in schema:
        return "keys " + ", ".join(schema["properties"])
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
                                           "minItems") if k in schema]
    kind = schema.get("type")
    return ", ".join(([f"type {kind}"] if kind else []) + bounds) or "see workflow/schemas/config.schema.yaml"


def schema_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, e.absolute_path)) or "(top level)"
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            out.append(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; allowed: "
                       f"{', '.join(e.schema.get('properties', {})) or 'see the schema'}")
        else:
            out.append(f"{where}: {e.instance!r} is not allowed ({e.message}); allowed: {_allowed(e.schema)}")
    return out


def grid_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every grid value checked against the schema of its setting (the checks a setting gets elsewhere), naming the
    experiment, the key and the value."""
    settings = schema["$defs"]["settings"]["properties"]
    out = []
    for name, exp in config["experiments"].items():
        for key, values in (exp.get("grid") or {}).items():
            where = f"experiments.{name}.grid.{key}"
            if key not in settings:
                out.append(f"{where}: unknown setting {key!r}; allowed: {', '.join(settings)}")
                continue
            validator = jsonschema.Draft202012Validator({**settings[key], "$defs": schema["$defs"]})
            for value in values:
                for e in validator.iter_errors(value):
                    out.append(f"{where}: {value!r} is not allowed ({e.message}); allowed: {_allowed(e.schema)}")
    return out


def _mapping(node: Any) -> dict:
    return node if isinstance(node, dict) else {}


def replaced_errors(config: dict[str, Any]) -> list[str]:
    """Settings that were replaced (ucir.config.REPLACED), wherever a setting may stand, each with its
    replacement: refused, never ignored."""
    places = [("", config)]
    places += [(f"datasets.{n}.settings.", _mapping(d).get("settings"))
               for n, d in _mapping(config.get("datasets")).items()]
    places += [(f"variants.{n}.", v) for n, v in _mapping(config.get("variants")).items()]
    places += [(f"experiments.{n}.grid.", _mapping(e).get("grid"))
               for n, e in _mapping(config.get("experiments")).items()]
    return [f"{where}{key}: {REPLACED[key]}" for where, node in places
            for key in sorted(set(_mapping(node)) & set(REPLACED))]


def _fill_enums(node: Any, enums: dict[str, tuple]) -> Any:
    if isinstance(node, dict):
        node = {k: _fill_enums(v, enums) for k, v in node.items()}
        if "enum_from" in node:
            node["enum"] = list(enums[node.pop("enum_from")])
        return node
    return [_fill_enums(v, enums) for v in node] if isinstance(node, list) else node


def load_schema(path: str | Path) -> dict[str, Any]:
    """The workflow's JSON schema, each `enum_from: <name>` replaced by the package's list of allowed values, and
    the execution settings ($defs/execution) allowed at the top level and among a dataset's settings."""
    with open(path) as f:
        schema = _fill_enums(yaml.safe_load(f), {**ENUMS, "method": METHODS, "plot": EXPERIMENT_PLOTS})
    execution = schema["$defs"]["execution"]["properties"]
    schema["properties"].update(execution)
    schema["$defs"]["settings"]["properties"].update(execution)
    return schema


def check_config(config: dict[str, Any], schema: dict[str, Any], check_paths: bool = True) -> list[Run]:
    """Raise ConfigError on the first problem; return the runs the configuration asks for. check_paths=False: the
    dataset folders need not exist (planning a grid on a machine without its data)."""
    errors = replaced_errors(config) or schema_errors(config, schema)
    errors += [] if errors else grid_errors(config, schema)
    if errors:
        raise ConfigError("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))
    if check_paths:
        check_dataset_paths(config)
    return expand_runs(config)

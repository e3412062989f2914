"""Check a workflow configuration before any job runs: values as people write them read as the schema's types,
the JSON schema, repeated list entries, the dataset folders, every run's settings (ucir.config.RunConfig.check),
optional packages, then settings that would silently do less than they say (RunConfig.review). Each error is one
ConfigError naming the key, the bad value and what is allowed; each warning one line on stderr."""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .config import ENUMS, METHODS, REPLACED, ConfigError, RunConfig
from .grid import Run, check_data, check_downloads, execution_settings, expand_runs
from .report import EXPERIMENT_PLOTS


def _allowed(schema: dict) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(map(str, schema["enum"]))
    if "properties" in schema:
        return "keys " + ", ".join(schema["properties"])
    bounds = [f"{k} {schema[k]}" for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
                                           "minItems") if k in schema]
    kind = schema.get("type")
    kind = "true or false" if kind == "boolean" else f"type {kind}" if kind else None
    return ", ".join(([kind] if kind else []) + bounds) or "see workflow/schemas/config.schema.yaml"


def _short(value: Any, most: int = 80) -> str:
    """repr(value), cut to `most` characters: a message names a value, never a whole section of the config."""
    r = repr(value)
    return r if len(r) <= most else r[:most - 3] + "..."


def schema_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    out = []
    for e in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(map(str, e.absolute_path)) or "(top level)"
        if e.validator == "additionalProperties":
            known = list(e.schema.get("properties", {}))
            extra = sorted(set(e.instance) - set(known))
            near = {k: difflib.get_close_matches(str(k), known, n=1) for k in extra}
            hint = "".join(f" ({k!r}: did you mean {m[0]!r}?)" for k, m in near.items() if m)
            out.append(f"{where}: unknown key(s) {', '.join(map(repr, extra))}{hint}; allowed: "
                       f"{', '.join(known) or 'see the schema'}")
        elif e.validator == "required":
            missing = [k for k in e.validator_value if k not in e.instance]
            out.append(f"{where}: missing key(s) {', '.join(map(repr, missing))}; required: "
                       f"{', '.join(e.validator_value)}")
        else:
            message = e.message.replace(repr(e.instance), "it") if len(repr(e.instance)) > 80 else e.message
            out.append(f"{where}: {_short(e.instance)} is not allowed ({message}); allowed: {_allowed(e.schema)}")
    return list(dict.fromkeys(out))                     # one line per missing-key group


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
                    out.append(f"{where}: {_short(value)} is not allowed ({e.message}); allowed: "
                               f"{_allowed(e.schema)}")
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


# ---- values as people write them ------------------------------------------------------------------------------
# PyYAML reads YAML 1.1: `5e-4` and `1e-1` (no dot) are strings there, and Snakemake's `--config key=value` gives
# `true` and everything inside a [list] or {mapping} as strings (it tries int, float, True/False, then YAML's
# BaseLoader, which types nothing). A string where the schema takes no string but a number, a boolean or null is
# read as one when it is written as one; anything else ("no", "ten") is left for the schema to refuse.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _types(schema: dict) -> set:
    kind = schema.get("type", ())
    return {kind} if isinstance(kind, str) else set(kind)


def _scalar(value: Any, schema: dict) -> Any:
    types, enum = _types(schema), schema.get("enum", [])
    if isinstance(value, float) and value.is_integer() and types & {"integer", "number"} == {"integer"}:
        return int(value)                   # 1e2 or 100.0 where an integer is expected (an epoch count, a seed)
    if not isinstance(value, str) or "string" in types or value in enum:
        return value
    text = value.strip()
    if text.lower() in ("true", "false") and ("boolean" in types or any(isinstance(v, bool) for v in enum)):
        return text.lower() == "true"
    if text.lower() in ("null", "~") and "null" in types:
        return None
    if NUMBER.fullmatch(text) and math.isfinite(float(text)):              # 1e400 overflows: left as written
        number = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
        if "integer" in types and float(number).is_integer():
            return int(number)
        if "number" in types:
            return number
    return value


def coerce(node: Any, schema: dict, root: dict) -> Any:
    """`node` with its strings read as the numbers, booleans and nulls the schema expects there (dicts and lists
    changed in place, so the caller's config holds the typed values)."""
    while "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    if isinstance(node, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, value in node.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                node[key] = coerce(value, sub, root)
        return node
    if isinstance(node, list):
        if isinstance(schema.get("items"), dict):
            node[:] = [coerce(v, schema["items"], root) for v in node]
        return node
    return _scalar(node, schema)


def coerce_config(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every value of `config` (a grid's values as their setting's) read as the schema's type, in place."""
    coerce(config, schema, schema)
    settings = schema["$defs"]["settings"]["properties"]
    experiments = config.get("experiments")
    for exp in experiments.values() if isinstance(experiments, dict) else ():
        grid = exp.get("grid") if isinstance(exp, dict) else None
        for key, values in (grid if isinstance(grid, dict) else {}).items():
            if key in settings and isinstance(values, list):
                values[:] = [coerce(v, settings[key], schema) for v in values]


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


def repeated_errors(config: dict[str, Any]) -> list[str]:
    """A value listed twice (a seed, a method, a grid value) adds no run: the list says more than the grid does."""
    lists = [("seeds", config["seeds"])]
    for name, exp in config["experiments"].items():
        lists += [(f"experiments.{name}.{k}", exp[k]) for k in ("datasets", "methods", "variants", "phases", "seeds")
                  if k in exp]
        lists += [(f"experiments.{name}.grid.{k}", v) for k, v in (exp.get("grid") or {}).items()]
    out = []
    for where, values in lists:
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            out.append(f"{where}: {_short(repeated[0])} is repeated in {_short(values)}; list each value once "
                       "(a repeat adds no run)")
    return out


# Settings that need an optional package: setting -> (module, the pip command that installs it).
OPTIONAL = {"tensorboard": ("tensorboard", "pip install -e '.[tensorboard]'")}


def as_jobs_run(config: dict[str, Any], run: Run) -> RunConfig:
    """A run's settings with its dataset's execution settings, as its jobs see them (ucir.jobs.job)."""
    return dataclasses.replace(run.cfg, **execution_settings(config, run.dataset))


def check_optional_packages(config: dict[str, Any], runs: list[Run]) -> None:
    for ds in sorted({r.dataset for r in runs}):
        execution = execution_settings(config, ds)
        for key, (module, install) in OPTIONAL.items():
            if execution.get(key) and importlib.util.find_spec(module) is None:
                where = (f"datasets.{ds}.settings.{key}" if key in (config["datasets"][ds].get("settings") or {})
                         else key)
                raise ConfigError(f"{where}={execution[key]!r} needs the {module!r} package, which is not "
                                  f"installed: {install} (or set {where}: false)")


def unread_roots(config: dict[str, Any]) -> list[str]:
    """A root given for synthetic data is never read: perhaps the source was meant to be the real dataset."""
    return [f"datasets.{name}.root={ds['root']!r}: source synthetic generates its data and reads no folder"
            for name, ds in config["datasets"].items() if ds["source"] == "synthetic" and ds.get("root")]


def review_runs(config: dict[str, Any], runs: list[Run]) -> list[str]:
    """RunConfig.review over the runs: the first refused finding raises ConfigError naming the run; the others
    come back as warning lines, each once per dataset however many runs share it."""
    said: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        for finding in as_jobs_run(config, r).review():
            if finding.refuse:
                raise ConfigError(f"experiments.{r.experiments[0]} ({r.dataset}, {r.method}, {r.variant}, "
                                  f"{r.phases} phases, seed {r.seed}): {finding.key}={finding.value!r} is not "
                                  f"allowed: {finding.why}")
            said.setdefault((r.dataset, str(finding)), []).append(r)
    return [f"{text} (run {_run_path(rs[0])}" + (f" and {len(rs) - 1} more)" if len(rs) > 1 else ")")
            for (_, text), rs in said.items()]


def _run_path(r: Run) -> str:
    return f"{r.dataset}/{r.method}/{r.variant}/p{r.phases}/seed{r.seed}"


def check_config(config: dict[str, Any], schema: dict[str, Any], check_paths: bool = True,
                 warn: bool = True) -> list[Run]:
    """Raise ConfigError on the first problem; return the runs the configuration asks for, after printing one
    warning line on stderr per setting that does less than it says. Strings written as numbers or booleans where
    the schema expects one become one, in `config` itself. check_paths: the data of the datasets the runs read are
    checked too (ucir.grid.check_data, as a real run); False: they are not (planning a grid on a machine without
    its data; the workflow checks them itself, knowing a dry run). warn: False leaves the warnings out (the
    Snakemake a cluster job starts reads the configuration again: its log need not repeat them)."""
    errors = replaced_errors(config)
    if not errors:
        coerce_config(config, schema)
        errors = schema_errors(config, schema)
        errors += [] if errors else grid_errors(config, schema) + repeated_errors(config)
    if errors:
        raise ConfigError("; ".join(errors[:5]) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""))
    check_downloads(config)
    runs = expand_runs(config)
    if check_paths:
        check_data(config, runs)
    check_optional_packages(config, runs)
    for line in unread_roots(config) + review_runs(config, runs) if warn else ():
        print(f"ucir: warning: {line}", file=sys.stderr)
    return runs

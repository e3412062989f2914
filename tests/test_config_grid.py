"""The configuration: grid expansion and variant naming (ucir.grid), the JSON schema the workflow validates
against (workflow/schemas/config.schema.yaml), and that `snakemake -n` refuses an invalid configuration."""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ucir import deps
from ucir.config import ConfigError, RunConfig
from ucir.grid import expand_runs, shared_jobs
from ucir.validate import check_config, load_schema

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
# RunConfig fields that are not per-run settings: they come from datasets.<name>, the grid's axes or the top level
NOT_SETTINGS = {"dataset", "source", "root", "download", "num_classes", "base_classes", "phases", "seed", "method"}
VARIANT_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")     # the workflow's wildcard constraint for {variant}


def tiny() -> dict:
    return yaml.safe_load(TINY.read_text())


def by_variant(runs) -> dict:
    return {r.variant: r for r in runs}


# ---- grid expansion -------------------------------------------------------------------------------------------

def test_tiny_config_is_one_run():
    (run,) = expand_runs(tiny())
    assert run.key == ("synthetic", "lucir", "default", 2, 1993)
    assert run.identity() == {"dataset": "synthetic", "method": "lucir", "variant": "default", "phases": 2,
                              "seed": 1993}
    assert (run.base, run.memory, run.evaluation) == ("cosine-resnet8", "herding4", "metrics")
    assert run.experiments == ["main"]


def test_variant_names_name_only_grid_keys_that_differ_from_the_default():
    cfg = tiny()                                     # per_class 4, margin 0.5 in datasets.synthetic.settings
    cfg["experiments"]["main"]["grid"] = {"per_class": [4, 2], "margin": [0.5, 0.3]}
    runs = by_variant(expand_runs(cfg))
    assert set(runs) == {"default", "default_per_class2", "default_margin0.3", "default_per_class2_margin0.3"}
    assert all(VARIANT_NAME.match(name) for name in runs)
    assert (runs["default_per_class2_margin0.3"].settings["per_class"],
            runs["default_per_class2_margin0.3"].settings["margin"]) == (2, 0.3)
    plain = copy.deepcopy(tiny())
    assert runs["default"].settings == expand_runs(plain)[0].settings


def test_variant_names_start_from_the_flag_set():
    cfg = tiny()
    cfg["variants"] = {"cn_lc": {"margin_ranking": False}}
    cfg["experiments"]["main"]["variants"] = ["default", "cn_lc"]
    cfg["experiments"]["main"]["grid"] = {"lambda_rule": ["code", "fixed"]}
    runs = by_variant(expand_runs(cfg))
    assert set(runs) == {"default", "default_lambda_rulefixed", "cn_lc", "cn_lc_lambda_rulefixed"}
    assert runs["cn_lc"].settings["margin_ranking"] is False and runs["default"].settings["margin_ranking"] is True
    assert runs["cn_lc_lambda_rulefixed"].settings["lambda_rule"] == "fixed"
    assert runs["cn_lc"].settings["lambda_rule"] == "code"


def test_variant_names_compare_with_the_method_preset():
    cfg = tiny()
    cfg["experiments"]["main"]["methods"] = ["lucir", "icarl"]
    cfg["experiments"]["main"]["grid"] = {"margin_ranking": [False]}
    runs = expand_runs(cfg)
    # lucir's preset has margin ranking, icarl's has not: only lucir's run is named after the grid value
    assert {(r.method, r.variant) for r in runs} == {("lucir", "default_margin_rankingFalse"), ("icarl", "default")}


@pytest.mark.parametrize("path", ["config.yaml", "configs/demo.yaml"])
def test_lwf_keeps_no_exemplars_in_the_shipped_configs(path):
    runs = [r for r in expand_runs(yaml.safe_load((REPO / path).read_text())) if r.method == "lwf"]
    assert runs
    memory = {r.key: RunConfig.from_dict(r.settings).memory_per_class(r.settings["num_classes"]) for r in runs}
    assert set(memory.values()) == {0}, memory


def test_identical_runs_from_two_experiments_are_merged():
    cfg = tiny()
    cfg["experiments"]["again"] = {"datasets": ["synthetic"], "methods": ["lucir", "icarl"], "phases": [2],
                                   "grid": {"per_class": [4]}}   # per_class 4 is the default: same run
    runs = expand_runs(cfg)
    keys = [r.key for r in runs]
    assert len(keys) == len(set(keys)) == 2
    merged = by_variant(r for r in runs if r.method == "lucir")["default"]
    assert sorted(merged.experiments) == ["again", "main"]
    (icarl,) = [r for r in runs if r.method == "icarl"]
    assert icarl.experiments == ["again"]


def test_grid_values_give_distinct_settings():
    cfg = tiny()
    cfg["experiments"]["main"]["grid"] = {"lambda_base": [5.0, 2.0, 10.0]}
    runs = expand_runs(cfg)
    assert len(runs) == len({r.key for r in runs}) == 3
    assert sorted(r.settings["lambda_base"] for r in runs) == [2.0, 5.0, 10.0]
    rest = [{k: v for k, v in r.settings.items() if k != "lambda_base"} for r in runs]
    assert all(x == rest[0] for x in rest)


def test_runs_share_base_models_by_head():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    runs = expand_runs(cfg)
    bases = {}
    for r in runs:
        bases.setdefault((r.dataset, r.base, r.seed), set()).add(r.method)
    assert len(bases) == 2 * len(cfg["seeds"]), sorted(bases)
    for (_, base, _), methods in bases.items():
        assert methods == ({"lucir"} if base.startswith("cosine-") else {"icarl", "lwf", "finetune", "joint"})
    # everything a base model depends on is the same for the runs that share it
    for key in bases:
        slices = [deps.stage_settings("train_base", r.cfg, 0) for r in runs if (r.dataset, r.base, r.seed) == key]
        assert all(s == slices[0] for s in slices)


def test_grid_errors_name_the_experiment():
    cfg = tiny()
    cfg["experiments"]["main"]["phases"] = [3]       # 4 incremental classes
    with pytest.raises(ConfigError, match=r"experiments\.main.*phases"):
        expand_runs(cfg)
    cfg = tiny()
    cfg["experiments"]["main"]["variants"] = ["nope"]
    with pytest.raises(ConfigError, match=r"experiments\.main\.variants.*nope"):
        expand_runs(cfg)


def test_a_grid_value_no_stage_reads_adds_no_run():
    cfg = tiny()
    cfg["experiments"]["main"]["methods"] = ["lucir", "icarl"]
    cfg["experiments"]["main"]["grid"] = {"kd_T": [2.0, 3.0]}        # iCaRL's distillation temperature
    runs = sorted((r.method, r.variant) for r in expand_runs(cfg))
    assert runs == [("icarl", "default"), ("icarl", "default_kd_T3.0"), ("lucir", "default")]


def test_a_grid_key_is_named_only_where_it_matters_in_that_point():
    cfg = tiny()
    cfg["experiments"]["main"]["grid"] = {"margin_ranking": [True, False], "margin": [0.5, 0.3]}
    runs = by_variant(expand_runs(cfg))
    # without margin ranking the margin is not read: (False, 0.5) and (False, 0.3) are one run
    assert set(runs) == {"default", "default_margin0.3", "default_margin_rankingFalse"}


def test_the_bf16_control_runs_the_fashion_mnist_protocol_at_30_epochs():
    def dataset(path):
        (ds,) = yaml.safe_load((REPO / path).read_text())["datasets"].values()
        return ds
    main, control = dataset("configs/fashion_mnist.yaml"), dataset("configs/fashion_mnist_precision.yaml")
    schedules = ("base_train", "train", "cbf_train")                # the control trains 30 epochs, the main run 20
    assert {k: v for k, v in main["settings"].items() if k not in schedules} == \
        {k: v for k, v in control["settings"].items() if k not in schedules}
    assert control["settings"]["train"] == {"epochs": 30, "lr": 0.1, "milestones": [15, 22], "batch_size": 128}
    assert {k: v for k, v in main.items() if k != "settings"} == {k: v for k, v in control.items() if k != "settings"}
    (exp,) = yaml.safe_load((REPO / "configs/fashion_mnist_precision.yaml").read_text())["experiments"].values()
    assert exp["grid"] == {"precision": ["fp32", "bf16"]} and len(yaml.safe_load(
        (REPO / "configs/fashion_mnist_precision.yaml").read_text())["seeds"]) >= 3


def test_runs_that_name_one_shared_job_must_agree_on_it():
    cfg = tiny()
    cfg["experiments"]["main"]["grid"] = {"base_train": [{"epochs": 1, "milestones": [], "batch_size": 16},
                                                         {"epochs": 2, "milestones": [], "batch_size": 16}]}
    with pytest.raises(ConfigError, match=r"share the train_base job of synthetic/cosine-resnet8/1993 but differ "
                                          r"in base_train"):
        expand_runs(cfg)


def test_shared_jobs_are_keyed_by_what_they_depend_on():
    cfg = tiny()
    cfg["experiments"]["main"]["methods"] = ["lucir", "icarl", "finetune", "lwf", "joint"]
    keys = {r.method: shared_jobs(r) for r in expand_runs(cfg)}
    assert keys["icarl"] == keys["finetune"] and keys["lwf"] == keys["joint"] != keys["icarl"]
    assert [k[-1] for k in keys["lwf"]][1:] == ["none", "metrics"]


@pytest.mark.parametrize("where", ["grid", "variant"])
def test_execution_settings_are_refused_in_grids_and_variants(where):
    cfg = tiny()
    if where == "grid":
        cfg["experiments"]["main"]["grid"] = {"checkpoint_every": [0, 5]}
    else:
        cfg["variants"] = {"fast": {"eval_batch_size": 64}}
    with pytest.raises(ConfigError, match=r"(checkpoint_every|eval_batch_size) changes how jobs run, not what they "
                                          r"compute"):
        expand_runs(cfg)


@pytest.mark.parametrize("grid,message", [
    ({"nme_flip": [True, "no"]}, r"experiments\.main\.grid\.nme_flip: 'no' is not allowed"),
    ({"per_class": [2, "ten"]}, r"experiments\.main\.grid\.per_class: 'ten' is not allowed"),
    ({"per_class": [2, "2.5"]}, r"experiments\.main\.grid\.per_class: '2\.5' is not allowed"),
    ({"selection": ["herding", "greedy"]}, r"experiments\.main\.grid\.selection: 'greedy' is not allowed"),
    ({"margin": [0.5, 3.0]}, r"experiments\.main\.grid\.margin: 3\.0 is not allowed"),
    ({"lamda": [1.0]}, r"experiments\.main\.grid\.lamda: unknown setting 'lamda'"),
])
def test_grid_values_are_checked_like_settings(grid, message):
    cfg = tiny()
    cfg["experiments"]["main"]["grid"] = grid
    with pytest.raises(ConfigError, match=message):
        check_config(cfg, load_schema(SCHEMA_PATH))


# ---- the schema -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema() -> dict:
    s = load_schema(SCHEMA_PATH)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(s)
    return s


def errors(schema: dict, cfg: dict) -> list[jsonschema.ValidationError]:
    return list(Draft202012Validator(schema).iter_errors(cfg))


@pytest.mark.parametrize("path", ["tests/configs/tiny.yaml", "configs/demo.yaml", "config.yaml"])
def test_shipped_configs_are_valid(schema, path):
    assert not errors(schema, yaml.safe_load((REPO / path).read_text()))


def _set(path, value):
    def change(cfg):
        *parents, last = path
        d = cfg
        for p in parents:
            d = d[p]
        d[last] = value
    return change


@pytest.mark.parametrize("change,key", [
    pytest.param(_set(["colour"], "red"), "colour", id="unknown_top_level_key"),
    pytest.param(_set(["datasets", "synthetic", "settings", "lambda_bse"], 5.0), "lambda_bse",
                 id="unknown_settings_key"),
    pytest.param(_set(["variants"], {"cn": {"distil": "none"}}), "distil", id="unknown_variant_key"),
    pytest.param(_set(["seeds"], "1993"), "seeds", id="wrong_type"),
    pytest.param(_set(["experiments", "main", "methods"], ["lucir", "sgd"]), "methods", id="method_not_in_enum"),
])
def test_schema_rejects_with_a_message_naming_the_key(schema, change, key):
    cfg = tiny()
    change(cfg)
    errs = errors(schema, cfg)
    assert errs, "accepted"
    err = best_match(errs)
    # what a user reads: where (JSON path) and what; Snakemake prints str(err), which holds both
    message = f"{err.json_path}: {err.message}"
    assert key in message, message
    assert key in str(err)


def test_schema_settings_are_the_run_config_fields(schema):
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert NOT_SETTINGS <= fields
    settings = set(schema["$defs"]["settings"]["properties"])
    assert settings == fields - NOT_SETTINGS, (sorted(settings - fields), sorted(fields - NOT_SETTINGS - settings))
    schedule = {f.name for f in dataclasses.fields(RunConfig().train)}
    assert set(schema["$defs"]["schedule"]["properties"]) == schedule
    assert set(schema["properties"]["datasets"]["additionalProperties"]["properties"]) == {
        "source", "root", "download", "num_classes", "base_classes", "settings"}


# ---- snakemake refuses an invalid configuration ---------------------------------------------------------------

def _add_dataset_without_root(cfg, tmp_path):
    cfg["datasets"]["cifar"] = {"source": "cifar100", "root": str(tmp_path / "missing"), "num_classes": 100,
                                "base_classes": 50}
    for exp in cfg["experiments"].values():
        exp["datasets"] = ["cifar"]                 # read by the runs (a dry run would plan without it, and say so)


def _indivisible_phases(cfg, tmp_path):
    cfg["experiments"]["main"]["phases"] = [3]       # 6 classes, 2 in the base: 4 do not split into 3 phases


def _string_seeds(cfg, tmp_path):
    cfg["seeds"] = "1993"


@pytest.mark.workflow
@pytest.mark.parametrize("change,pattern", [
    pytest.param(_indivisible_phases, r"phases=3 is not allowed", id="classes_do_not_divide_into_phases"),
    pytest.param(_add_dataset_without_root, r"datasets\.cifar\.root", id="missing_dataset_root"),
    pytest.param(_string_seeds, r"\bseeds\b", id="schema_violation"),
])
def test_snakemake_refuses_an_invalid_config_and_writes_nothing(tmp_path, change, pattern):
    cfg = tiny()
    change(cfg, tmp_path)
    configfile = tmp_path / "invalid.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--configfile", str(configfile), "--cores", "2"],               # a real run: refused before any job
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert re.search(pattern, proc.stdout), proc.stdout[-3000:]
    assert not (work / "results").exists() and not (work / "logs").exists()

"""What a researcher types (issue 25): YAML as people write it (exponent floats, booleans from the command line)
read as the schema's types, optional packages asked for before any job, and settings that would silently do less
than they say refused or said, each naming the key and the value (ucir.validate.check_config, RunConfig.review)."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

from ucir import validate
from ucir.config import IMAGES_PER_CLASS, SOURCES, ConfigError, resolve
from ucir.grid import execution_settings
from ucir.validate import check_config, load_schema

from smk import dry_run, snakemake, write_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
SHIPPED = sorted(p.relative_to(REPO).as_posix() for p in [*REPO.glob("configs/*.yaml"), REPO / "config.yaml",
                                                           *REPO.glob("tests/configs/*.yaml")])


def tiny(**settings) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["datasets"]["synthetic"]["settings"].update(settings)
    return cfg


def refused(cfg: dict, *words: str) -> str:
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA, check_paths=False)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"
    return str(e.value)


def warned(cfg: dict, capsys) -> list[str]:
    capsys.readouterr()
    check_config(cfg, SCHEMA, check_paths=False)
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("ucir: warning:")]


# ---- YAML as people write it ----------------------------------------------------------------------------------

EXPONENTS = """
seeds: [1993]
datasets:
  synthetic:
    source: synthetic
    num_classes: 6
    base_classes: 2
    settings:
      train_per_class: 16
      test_per_class: 8
      backbone: resnet8
      lambda_base: 5e0
      per_class: 4
      base_train: {epochs: 1e0, lr: 1e-1, milestones: [], weight_decay: 5e-4, batch_size: 16}
      train: {epochs: 2, lr: 1E-1, milestones: [1], weight_decay: 5e-4, batch_size: 16}
variants:
  small_margin: {margin: 3e-1}
experiments:
  main:
    datasets: [synthetic]
    methods: [lucir]
    variants: [default, small_margin]
    phases: [2]
    grid: {kd_weight: [1e0], lambda_base: [5e0, 1e1]}
    plot: accuracy
"""


def test_exponent_floats_are_numbers_in_settings_variants_and_grids():
    cfg = yaml.safe_load(EXPONENTS)
    assert cfg["datasets"]["synthetic"]["settings"]["base_train"]["weight_decay"] == "5e-4"    # PyYAML: YAML 1.1
    runs = {r.variant: r.cfg for r in check_config(cfg, SCHEMA, check_paths=False)}
    assert set(runs) == {"default", "default_lambda_base10.0", "small_margin", "small_margin_lambda_base10.0"}
    c = runs["small_margin"]
    assert (c.base_train.weight_decay, c.base_train.lr, c.train.lr, c.lambda_base, c.margin) == (5e-4, 0.1, 0.1,
                                                                                                5.0, 0.3)
    assert c.base_train.epochs == 1 and type(c.base_train.epochs) is int       # 1e0 where an integer is expected
    assert runs["default_lambda_base10.0"].lambda_base == 10.0
    # in the config itself, so the workflow's params read numbers too
    assert cfg["datasets"]["synthetic"]["settings"]["base_train"]["weight_decay"] == 5e-4
    assert cfg["experiments"]["main"]["grid"]["lambda_base"] == [5.0, 10.0]


@pytest.mark.parametrize("value,expected", [("true", True), ("TRUE", True), ("False", False), ("false", False)])
def test_booleans_in_any_case_where_a_boolean_is_expected(value, expected):
    cfg = tiny(imprint=value, freeze_old=value)
    cfg["deterministic"], cfg["tensorboard"] = value, False
    (run,) = check_config(cfg, SCHEMA, check_paths=False)
    assert (run.cfg.imprint, run.cfg.freeze_old, cfg["deterministic"]) == (expected, expected, expected)


def test_strings_from_the_command_line_become_the_numbers_and_nulls_expected():
    """Snakemake's --config gives a [list] or {mapping} as strings (YAML's BaseLoader): seeds=[1993] is ['1993']."""
    cfg = tiny(per_class="2", workers="null", margin=".4")
    cfg["seeds"], cfg["eval_batch_size"] = ["1993"], "64"
    (run,) = check_config(cfg, SCHEMA, check_paths=False)
    workers = cfg["datasets"]["synthetic"]["settings"]["workers"]                # an execution setting
    assert (run.seed, run.cfg.per_class, workers, run.cfg.margin, cfg["eval_batch_size"]) == (1993, 2, None, 0.4, 64)


@pytest.mark.parametrize("key,value,where", [
    ("imprint", "no", "datasets.synthetic.settings.imprint"),
    ("imprint", "yes", "datasets.synthetic.settings.imprint"),
    ("lambda_base", "five", "datasets.synthetic.settings.lambda_base"),
    ("per_class", "2.5", "datasets.synthetic.settings.per_class"),
    ("lambda_base", "nan", "datasets.synthetic.settings.lambda_base"),
    ("backbone", "true", "datasets.synthetic.settings.backbone"),
    ("lambda_base", "1e400", "datasets.synthetic.settings.lambda_base"),        # overflows: not a number
])
def test_a_string_that_is_no_number_or_boolean_is_still_refused(key, value, where):
    message = refused(tiny(**{key: value}), where, repr(value))
    if key == "imprint":
        assert "true or false" in message


def test_a_missing_top_level_key_is_named_without_printing_the_configuration():
    cfg = copy.deepcopy(TINY)
    cfg["seed"] = cfg.pop("seeds")
    message = refused(cfg, "missing key(s) 'seeds'", "unknown key(s) 'seed'", "did you mean 'seeds'")
    assert "train_per_class" not in message and len(message) < 400, message


def test_a_section_of_the_wrong_shape_is_refused_by_the_schema():
    cfg = copy.deepcopy(TINY)
    cfg["experiments"] = [cfg["experiments"]["main"]]
    refused(cfg, "experiments:", "is not of type 'object'")


def test_a_long_value_is_cut_in_the_message():
    cfg = copy.deepcopy(TINY)
    cfg["datasets"]["synthetic"]["settings"] = ["per_class: 4"] * 30
    message = refused(cfg, "datasets.synthetic.settings", "...", "not of type 'object'")
    assert message.count("per_class: 4") < 10, message


# ---- optional packages ----------------------------------------------------------------------------------------

def _without(module, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(validate.importlib.util, "find_spec", lambda name, *a: None if name == module else
                        real(name, *a))


@pytest.mark.parametrize("where", ["top", "dataset"])
def test_tensorboard_without_its_package_is_refused_with_the_install_command(monkeypatch, where):
    _without("tensorboard", monkeypatch)
    cfg = tiny(tensorboard="true") if where == "dataset" else dict(tiny(), tensorboard=True)
    key = "datasets.synthetic.settings.tensorboard" if where == "dataset" else "tensorboard"
    refused(cfg, f"{key}=True", "'tensorboard' package", "pip install -e '.[tensorboard]'")
    assert check_config(tiny(tensorboard=False), SCHEMA, check_paths=False)       # not asked for: no package needed


def test_tensorboard_with_its_package_is_accepted():
    pytest.importorskip("tensorboard")
    cfg = dict(tiny(), tensorboard="true")
    (run,) = check_config(cfg, SCHEMA, check_paths=False)
    assert execution_settings(cfg, run.dataset)["tensorboard"] is True          # what the jobs get


# ---- through Snakemake's own command line ---------------------------------------------------------------------

@pytest.mark.workflow
def test_the_command_line_takes_exponents_and_booleans_as_people_write_them(tmp_path):
    pytest.importorskip("tensorboard")
    configfile = tmp_path / "exponents.yaml"
    configfile.write_text(EXPONENTS)
    run = dry_run(tmp_path, configfile, "--config", "tensorboard=true", "deterministic=TRUE", "seeds=[1993]",
                  "datasets={synthetic: {settings: {imprint: false, per_class: 2}}}")
    assert {"results/synthetic/lucir/small_margin_lambda_base10.0/p2/seed1993/phase2/metrics.json",
            "results/synthetic/base/cosine-resnet8/seed1993/herding2/memory.pt"} <= run.outputs()


@pytest.mark.workflow
@pytest.mark.parametrize("config,words", [
    ("datasets={synthetic: {settings: {imprint: no}}}", ["datasets.synthetic.settings.imprint", "'no'"]),
    ("seeds=[1993,1993]", ["seeds", "1993 is repeated"]),
    ("datasets={synthetic: {settings: {train: {epochs: 6, milestones: [10]}}}}", ["train.milestones=[10]"]),
])
def test_the_command_line_refuses_mistakes_before_any_job(tmp_path, config, words):
    proc = snakemake(tmp_path, write_config(tmp_path / "tiny.yaml", TINY), "--dry-run", "--config", config)
    assert proc.returncode != 0
    for w in words:
        assert w in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "results").exists()


# ---- silent mistakes refused ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stage,schedule,words", [
    ("train", {"epochs": 6, "milestones": [10]}, ["train.milestones=[10]", "train.epochs 6", "at 10 it never"]),
    ("base_train", {"epochs": 4, "milestones": [2, 4]}, ["base_train.milestones=[2, 4]", "at 4 it never"]),
    ("train", {"epochs": 4, "milestones": [0]}, ["train.milestones=[0]", "at 0 it never"]),
])
def test_a_milestone_the_rate_never_reaches_is_refused(stage, schedule, words):
    refused(tiny(**{stage: {**TINY["datasets"]["synthetic"]["settings"][stage], **schedule}}), *words)


def test_cbf_milestones_count_only_where_cbf_runs():
    cfg = tiny(cbf_train={"epochs": 3, "milestones": [5], "batch_size": 4})
    assert check_config(copy.deepcopy(cfg), SCHEMA, check_paths=False)          # no CBF: its schedule is unused
    cfg["datasets"]["synthetic"]["settings"]["cbf"] = True
    refused(cfg, "cbf_train.milestones=[5]", "cbf_train.epochs 3")


@pytest.mark.parametrize("dataset,per_class,words", [
    (dict(source="synthetic", train_per_class=16), 20, ["per_class=20", "16 training images per class"]),
    (dict(source="cifar100", num_classes=100, base_classes=50), 600, ["per_class=600", "500 training images"]),
    (dict(source="cifar100", num_classes=100, base_classes=50, train_per_class=100), 150,
     ["per_class=150", "100 training images", "train_per_class 100"]),
    (dict(source="fashion_mnist", num_classes=10, base_classes=4, train_per_class=50), 60,
     ["per_class=60", "50 training images"]),
    (dict(source="imagenet_subset", num_classes=100, base_classes=50), 800, ["per_class=800", "732", "smallest"]),
])
def test_more_exemplars_per_class_than_images_are_refused(dataset, per_class, words):
    cfg = tiny(per_class=per_class)
    ds = cfg["datasets"]["synthetic"]
    dataset = dict(dataset)
    ds["settings"]["train_per_class"] = dataset.pop("train_per_class", None)
    ds.update(dataset)
    refused(copy.deepcopy(cfg), *words)
    ds["settings"]["per_class"] = 2                                             # a count that fits
    check_config(cfg, SCHEMA, check_paths=False)


def test_a_total_memory_the_data_cannot_hold_is_refused_or_said(capsys):
    # 6 classes of 16 images: at most 96 exemplars; 120 is 20 per class even at the end
    refused(tiny(per_class=None, total=120), "total=120", "never holds 120")
    # 60: 30 per class after the base phase (2 classes) but 10 at the end: the first phases hold less
    (line,) = warned(tiny(per_class=None, total=60), capsys)
    assert "total=60" in line and "30 exemplars per class after the base phase" in line


@pytest.mark.parametrize("where,value,message", [
    ("seeds", [1993, 1994, 1993], "seeds: 1993 is repeated in [1993, 1994, 1993]"),
    ("seeds", ["1993", 1993], "seeds: 1993 is repeated in [1993, 1993]"),               # once read as numbers
    ("experiments.main.seeds", [7, 1993, 7], "experiments.main.seeds: 7 is repeated in [7, 1993, 7]"),
    ("experiments.main.phases", [2, 2], "experiments.main.phases: 2 is repeated in [2, 2]"),
    ("experiments.main.methods", ["lucir", "icarl", "lucir"], "experiments.main.methods: 'lucir' is repeated"),
    ("experiments.main.grid.per_class", [2, 3, 2.0], "experiments.main.grid.per_class: 2 is repeated in [2, 3, 2]"),
])
def test_a_repeated_value_is_refused(where, value, message):
    cfg = copy.deepcopy(TINY)
    if where == "seeds":
        cfg["seeds"] = value
    elif where.endswith("per_class"):
        cfg["experiments"]["main"]["grid"] = {"per_class": value}
    else:
        cfg["experiments"]["main"][where.rsplit(".", 1)[1]] = value
    refused(cfg, message, "list each value once")


# ---- silent mistakes said: one warning line each, before any job -----------------------------------------------

def test_a_batch_larger_than_a_stage_is_said_once_for_all_its_runs(capsys):
    cfg = tiny(train={"epochs": 1, "milestones": [], "batch_size": 100})      # a phase: 2 x 16 + 2 x 4 = 40 images
    cfg["seeds"] = [1993, 1994]
    (line,) = warned(cfg, capsys)
    assert "train.batch_size=100" in line and "40 training images" in line and "and 1 more" in line, line


def test_the_warnings_can_be_left_out_where_they_were_said_already(capsys):
    """The Snakemake a cluster job starts reads the configuration again (common.smk: warn only in the main
    process): the same configuration, no warning line."""
    cfg = tiny(train={"epochs": 1, "milestones": [], "batch_size": 100})
    assert warned(copy.deepcopy(cfg), capsys)
    check_config(cfg, SCHEMA, check_paths=False, warn=False)
    assert capsys.readouterr().err == ""


def test_cbf_without_exemplars_is_said(capsys):
    cfg = tiny(cbf=True)
    cfg["experiments"]["main"]["methods"] = ["lwf"]
    (line,) = warned(cfg, capsys)
    assert "cbf=True" in line and "lwf keeps no exemplars" in line, line


def test_a_checkpoint_interval_longer_than_every_stage_is_said(capsys):
    cfg = dict(tiny(), checkpoint_every=5)
    (line,) = warned(cfg, capsys)
    assert "checkpoint_every=5" in line and "no stage trains more than 1 epoch, so" in line, line


def test_a_subsample_larger_than_the_data_is_said(capsys):
    cfg = tiny(test_per_class=200, train_per_class=None, per_class=20)
    cfg["datasets"]["synthetic"].update(source="cifar100", num_classes=100, base_classes=50)
    lines = warned(cfg, capsys)
    assert any("test_per_class=200" in x and "100 test images per class" in x for x in lines), lines


def test_review_of_a_sound_run_finds_nothing():
    cfg = resolve("lucir", dict(num_classes=10, base_classes=4, phases=2, train_per_class=50, per_class=10,
                                base_train=dict(epochs=8, milestones=[6], batch_size=64),
                                train=dict(epochs=6, milestones=[4], batch_size=64)))
    assert cfg.review() == []


# ---- every shipped configuration ------------------------------------------------------------------------------

def _typed(value):
    """A value with the type of every leaf: what the jobs' params compare (repr)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return [_typed(v) for v in value] if isinstance(value, list) else (type(value).__name__, value)


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_config_passes_the_whole_check_unchanged(path, capsys):
    cfg = yaml.safe_load((REPO / path).read_text())
    before = _typed(copy.deepcopy(cfg))
    lines = warned(cfg, capsys)
    assert _typed(cfg) == before                        # nothing to read differently: the same params, no reruns
    if path in ("configs/demo.yaml", "config.yaml") or path.startswith("tests/"):
        assert lines == [], lines


def test_the_image_table_covers_every_source():
    assert set(IMAGES_PER_CLASS) == set(SOURCES)
    assert all(t.smallest <= t.train <= t.largest for t in IMAGES_PER_CLASS.values())


def test_synthetic_data_is_never_downloaded_and_reads_no_folder(capsys):
    cfg = copy.deepcopy(TINY)
    cfg["datasets"]["synthetic"]["download"] = True
    with pytest.raises(ConfigError, match=r"datasets\.synthetic\.download: true is not allowed for source "
                                          r"'synthetic'"):
        check_config(cfg, SCHEMA)
    cfg = copy.deepcopy(TINY)
    cfg["datasets"]["synthetic"]["root"] = "data/cifar100"
    (line,) = warned(cfg, capsys)
    assert "datasets.synthetic.root='data/cifar100'" in line and "reads no folder" in line, line

"""The table of the workflow's rules (ucir/pipeline.py) against what reads or repeats it: the Snakefile's rules, the
SLURM profile, the Makefile, the schema's execution settings, the figure dispatch; and the code hash, which ignores
docstrings as it ignores comments."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from smk import REPO, _copy_sources, env_for
from ucir import codehash, deps, pipeline
from ucir.report import EXPERIMENT_FIGURES
from ucir.report.plots import EXPERIMENT_PLOTTERS
from ucir.validate import load_schema

DEMO = REPO / "configs" / "demo.yaml"


def _list_rules(src, tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(src / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(DEMO), "--list-rules"]
    return subprocess.run(cmd, env=env_for(src), capture_output=True, text=True, timeout=300)


def test_the_workflow_has_exactly_the_rules_of_the_table(tmp_path):
    p = _list_rules(REPO, tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    listed = set(p.stdout.split())
    assert listed == {*pipeline.BY_NAME, pipeline.TARGET}, listed ^ {*pipeline.BY_NAME, pipeline.TARGET}


def test_a_rule_the_table_does_not_name_stops_the_workflow(tmp_path):
    src = _copy_sources(tmp_path / "src")
    with open(src / "workflow" / "rules" / "report.smk", "a") as f:
        f.write('\n\nrule plot_extra:\n    output:\n        "extra.txt",\n    log:\n        "extra.log",\n'
                '    shell:\n        "touch {output}"\n')
    p = _list_rules(src, tmp_path / "work")
    assert p.returncode != 0
    assert "rules not in ucir.pipeline.RULES: plot_extra" in p.stdout + p.stderr


def test_a_table_rule_the_workflow_lacks_stops_it(tmp_path):
    src = _copy_sources(tmp_path / "src")
    path = src / "workflow" / "rules" / "data.smk"
    path.write_text(re.sub(r"^rule list_classes:.*", "", path.read_text(), flags=re.M | re.S))
    p = _list_rules(src, tmp_path / "work")
    assert p.returncode != 0
    assert "rules in ucir.pipeline.RULES that the workflow lacks: list_classes" in p.stdout + p.stderr


def test_the_slurm_profile_groups_are_the_tables():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["groups"] == pipeline.slurm_groups()


@pytest.mark.parametrize("name", ["slurm", "workstation"])
def test_the_profiles_give_every_gpu_rule_the_same_cpus_one_setting(name):
    text = (REPO / "workflow" / "profiles" / name / "config.yaml").read_text()
    threads = yaml.safe_load(text)["set-threads"]
    assert set(threads) == {r.name for r in pipeline.RULES if r.gpu} and len(set(threads.values())) == 1
    assert text.count("&cpus") == 1 and text.count("*cpus") == len(threads) - 1       # one anchor: one setting
    assert "cpus_per_gpu" not in (yaml.safe_load(text).get("set-resources") or {})    # it follows the threads


def test_a_gpu_jobs_cpus_follow_its_threads():
    res = pipeline.resources_of("train_phase")
    assert res["gpu"] == 1 and res["cpus_per_gpu"](None, threads=7) == 7
    assert "cpus_per_gpu" not in pipeline.resources_of("aggregate")


def test_the_makefile_runs_every_multi_threaded_rule_on_one_thread_on_cpus():
    line = next(x for x in (REPO / "Makefile").read_text().splitlines() if x.startswith("CPU "))
    named = dict(item.split("=") for item in line.split("--set-threads")[1].split())
    assert named == {r.name: "1" for r in pipeline.RULES if r.threads > 1}


def test_execution_settings_are_listed_once_in_the_schema():
    raw = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    listed = set(raw["$defs"]["execution"]["properties"])
    assert listed | {"root", "download"} == set(deps.EXECUTION)
    assert not listed & set(raw["properties"]) and not listed & set(raw["$defs"]["settings"]["properties"])
    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    assert listed <= set(schema["properties"]) and listed <= set(schema["$defs"]["settings"]["properties"])


def test_every_experiment_figure_has_its_plotter():
    assert tuple(EXPERIMENT_PLOTTERS) == EXPERIMENT_FIGURES
    assert all(pipeline.rule(f"plot_{f}").script == "plot_experiment" for f in EXPERIMENT_FIGURES)


def test_stages_and_their_rules():
    assert pipeline.STAGES == deps.STAGES == ("train_base", "train_phase", "select_exemplars", "finetune_balanced",
                                              "evaluate_phase")
    assert pipeline.BASE_RULES == {"train_base": "train_base", "select_exemplars": "select_base_exemplars",
                                   "evaluate_phase": "evaluate_base"}
    assert all((REPO / "workflow" / "scripts" / f"{r.script}.py").is_file() for r in pipeline.RULES)
    assert all((codehash.PKG / m).exists() for r in pipeline.RULES for m in r.code)


def test_the_code_hash_ignores_docstrings_not_code(tmp_path, monkeypatch):
    src = '"""Module doc."""\n\n\ndef f(x):\n    """Doc of f."""\n    return x + 1\n\n\nclass C:\n    """Doc."""\n'
    variants = {
        "same": src,
        "docstrings": src.replace("Module doc.", "Another text.").replace("Doc of f.", "Other.\n\n    More."),
        "comments": "# a comment\n" + src,
        "code": src.replace("x + 1", "x + 2"),
        "a string that is no docstring": src.replace('    return x + 1', '    "not a docstring"\n    return x + 1'),
    }
    digests = {}
    for name, text in variants.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "m.py").write_text(text)
        monkeypatch.setattr(codehash, "PKG", tmp_path / name)
        codehash.code_hash.cache_clear()
        digests[name] = codehash.code_hash(("m.py",))
    assert digests["docstrings"] == digests["comments"] == digests["same"]
    assert digests["code"] != digests["same"] and digests["a string that is no docstring"] != digests["same"]

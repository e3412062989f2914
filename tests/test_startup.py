"""`make startup` (ucir.tools.startup): it replays the jobs of the rules the workflow has, with their scripts' imports."""
from __future__ import annotations

import warnings

from ucir import deps
from ucir.tools import startup
from ucir.config import resolve


def test_every_stage_rule_is_replayed_with_its_own_script():
    scripts = startup.rule_scripts()
    stage_rules = [r for r in scripts if startup.stage_job(r)]
    assert set(stage_rules) == {"train_base", "select_base_exemplars", "evaluate_base", "train_phase",
                                "select_exemplars", "finetune_balanced", "evaluate_phase"}
    assert {"summarize_run", "aggregate"} <= set(scripts)
    assert all(path.is_file() for path, _ in scripts.values())
    assert scripts["select_base_exemplars"][0].name == "select_exemplars.py"
    assert scripts["train_phase"][1] == 2                                   # its threads
    code = startup.script_imports(scripts["train_base"][0])
    assert "from ucir.train import train_base" in code and "stage_job(" not in code


def test_child_times_each_segment(tmp_path):
    """One train_base job's start-up, replayed in this process on a tiny stand-in for CIFAR-100."""
    root = tmp_path / "cifar100"
    startup.fake_cifar100(root, train=200, test=100)
    cfg = resolve("lucir", dict(startup.PAPER, root=str(root)))
    script, threads = startup.rule_scripts()["train_base"]
    spec = dict(stage="train_base", settings=deps.stage_settings("train_base", cfg, 0), test=False,
                execution={"root": str(root), "device": "cpu"}, inputs={}, log=str(tmp_path / "log"),
                script=str(script), threads=threads, t0=startup.time.monotonic())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                    # the stand-in is not the official file
        marks = startup.child(spec)
    assert list(marks) == list(startup.SEGMENTS) and all(v >= 0 for v in marks.values())

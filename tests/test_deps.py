"""Each job's params are exactly what its output depends on (ucir.deps).

Checked against the stages themselves: every job of a set of runs that covers every method and flag is run on a
tiny synthetic dataset twice, once with the configuration a workflow job builds from its params (stage_settings,
every other field at its default) and traced, once with the run's settings where every field outside the params is
set to another valid value. The trace shows that the stage reads nothing outside its params and execution settings,
and reads every param that is not implied by its inputs; equal outputs show that nothing outside the params matters.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from ucir import deps
from ucir.config import ENUMS, METHODS, RunConfig, Schedule, resolve
from ucir.data import load_run_data
from ucir.evaluate import evaluate_phase
from ucir.exemplars import select_exemplars
from ucir.train import class_balance_finetune, train_base, train_phase
from ucir.validate import load_schema

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
CPU = torch.device("cpu")
FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
TINY = dict(dataset="synthetic", source="synthetic", num_classes=6, base_classes=2, phases=2, seed=1993,
            train_per_class=12, test_per_class=6, backbone="resnet8", per_class=3, eval_batch_size=64,
            base_train=dict(epochs=1, milestones=[], batch_size=8), train=dict(epochs=1, milestones=[], batch_size=8),
            cbf_train=dict(epochs=1, milestones=[], batch_size=8))
# one run per method and per flag that changes which settings a stage reads
CASES = {
    "lucir": ("lucir", {}),
    "lucir_cn": ("lucir", dict(distill="cosine_scores", freeze_old=False, margin_ranking=False)),
    "lucir_cn_l1": ("lucir", dict(distill="cosine_scores", cs_loss="l1", margin_ranking=False)),
    "lucir_cbf_fixed_total": ("lucir", dict(cbf=True, total=10, per_class=None, selection="herding_official",
                                            imprint=False, nme_flip=False)),
    "lucir_random": ("lucir", dict(selection="random", lambda_rule="fixed")),
    "icarl": ("icarl", {}),
    "lwf": ("lwf", {}),
    "finetune": ("finetune", {}),
    "joint": ("joint", {}),
}


class Traced(RunConfig):
    """A RunConfig that records which fields are read."""

    def __getattribute__(self, name):
        if name in FIELDS:
            object.__getattribute__(self, "__dict__").setdefault("_reads", set()).add(name)
        return object.__getattribute__(self, name)

    def reads(self) -> set[str]:
        return set(self.__dict__.get("_reads", ()))


def _as_traced(cfg: RunConfig) -> Traced:
    return Traced(**{f: getattr(cfg, f) for f in FIELDS})


def _other_value(name: str, value):
    """A valid value of field `name` other than `value` (for the fields no stage reads in the case at hand)."""
    prop = SCHEMA["$defs"]["settings"]["properties"].get(name, {})
    if "enum" in prop:
        return next(v for v in prop["enum"] if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, Schedule):
        return dataclasses.replace(value, epochs=value.epochs + 1, lr=value.lr / 2)
    if name == "method":
        return "icarl" if value != "icarl" else "finetune"
    if name == "total":
        return 12 if value is None else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value + 1
    if value is None:
        return 5
    raise AssertionError(f"no other value for {name}={value!r}")


def _perturbed(cfg: RunConfig, keep: set[str]) -> RunConfig:
    """The run's settings, every field outside `keep` (and the execution settings) set to another value."""
    out = {f: getattr(cfg, f) for f in FIELDS}
    for f in FIELDS - keep - set(deps.EXECUTION) - {"dataset", "source", "num_classes"}:
        out[f] = _other_value(f, out[f])
    return RunConfig(**out)


def _run_stage(stage, cfg, phase, state, per_class=None):
    """Run one stage with `cfg`, reading its inputs from `state` (outputs of earlier stages, full settings)."""
    data = load_run_data(cfg, CPU, workers=0, test=stage == "evaluate_phase")
    log = lambda msg: None  # noqa: E731
    if stage == "train_base":
        return train_base(cfg, data, CPU, log)
    if stage == "select_exemplars":
        return select_exemplars(cfg, phase, state[("model", phase)], state.get(("memory", phase - 1)), data, CPU,
                                log, per_class=per_class)
    if stage == "train_phase":
        return train_phase(cfg, phase, state[("final", phase - 1)], state[("memory", phase - 1)], data, CPU, log)
    if stage == "finetune_balanced":
        return class_balance_finetune(cfg, phase, state[("model", phase)], state[("final", phase - 1)],
                                      state[("memory", phase)], data, CPU, log)
    return evaluate_phase(cfg, phase, state[("final", phase)], state[("memory", phase)], data, CPU)


def _store(stage, phase, out, state):
    if stage in ("train_base", "train_phase"):
        state[("model", phase)] = state[("final", phase)] = out
    elif stage == "finetune_balanced":
        state[("final", phase)] = out
    elif stage == "select_exemplars":
        state[("memory", phase)] = out


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a if k != "config")
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)                                   # NaN == NaN


@pytest.fixture(scope="module", params=list(CASES))
def traced_run(request):
    """Every job of one case: (stage, phase, params, fields read, output from params, output from perturbed)."""
    method, flags = CASES[request.param]
    cfg = resolve(method, {**TINY, **flags})
    execution = {k: getattr(cfg, k) for k in deps.EXECUTION}
    state, jobs = {}, []
    for stage, phase in deps.run_stages(cfg):
        params = deps.stage_settings(stage, cfg, phase)
        fields = {k: v for k, v in params.items() if k != deps.EXEMPLARS}
        job_cfg = _as_traced(RunConfig.from_dict({**fields, **execution}, check=False))   # what a job builds
        per_class = params.get(deps.EXEMPLARS)                                             # ... and passes on
        out = _run_stage(stage, job_cfg, phase, state, per_class)
        other = _run_stage(stage, _perturbed(cfg, set(params)), phase, state, per_class)
        jobs.append((stage, phase, params, job_cfg.reads(), out, other))
        _store(stage, phase, out, state)
    return request.param, jobs


def test_stages_read_nothing_outside_their_params(traced_run):
    case, jobs = traced_run
    for stage, phase, params, reads, _, _ in jobs:
        extra = reads - set(params) - set(deps.EXECUTION)
        assert not extra, f"{case}: {stage} after phase {phase} reads {sorted(extra)}, not in its params"


def test_stages_read_every_param_not_implied_by_their_inputs(traced_run):
    case, jobs = traced_run
    implied = {k for r in deps.RULES if r.implied for k in r.keys}
    for stage, phase, params, reads, _, _ in jobs:
        # the memory's size: passed to the selection (not a field), and keys the memory an evaluation reads
        unread = set(params) - reads - implied - {deps.EXEMPLARS}
        assert not unread, f"{case}: {stage} after phase {phase} has params it never reads: {sorted(unread)}"


def test_settings_outside_the_params_change_no_output(traced_run):
    case, jobs = traced_run
    for stage, phase, _, _, out, other in jobs:
        assert _same(out, other), f"{case}: {stage} after phase {phase} depends on a setting outside its params"


# ---- the rules themselves -------------------------------------------------------------------------------------

def test_the_traced_runs_cover_every_method_and_every_distillation():
    # a new method or loss gets its own traced run here, or the tests above say nothing about its params
    runs = [resolve(method, {**TINY, **flags}) for method, flags in CASES.values()]
    assert {c.method for c in runs} == set(METHODS)
    assert {c.distill for c in runs} == set(ENUMS["distill"])
    assert {c.cs_loss for c in runs if c.distill == "cosine_scores"} == set(ENUMS["cs_loss"])


def test_every_field_is_classified_once():
    ruled = {k for r in deps.RULES for k in r.keys}
    classified = [*ruled, *deps.EXECUTION, *deps.STRUCTURAL, *deps.MEMORY_SIZE]
    assert len(classified) == len(set(classified)), sorted(k for k in classified if classified.count(k) > 1)
    assert set(classified) == FIELDS, (FIELDS - set(classified), set(classified) - FIELDS)
    for key in ruled:                                       # a field's rules never overlap in a stage
        stages = [s for r in deps.RULES if key in r.keys for s in r.stages]
        assert len(stages) == len(set(stages)), (key, stages)


def _lucir(**kw) -> RunConfig:
    return resolve("lucir", {**TINY, **kw})


def test_margin_settings_only_where_margin_ranking_is_on():
    on, off = _lucir(), _lucir(margin_ranking=False)
    assert {"K", "margin", "mr_reduction", "mr_weight"} <= set(deps.stage_settings("train_phase", on, 1))
    assert not {"K", "margin"} & set(deps.stage_settings("train_phase", off, 1))
    for stage in ("train_base", "select_exemplars", "evaluate_phase"):
        assert "margin" not in deps.stage_settings(stage, on, 1)


def test_kd_settings_only_with_kd_and_lambda_only_with_the_adaptive_weight():
    icarl, lucir = resolve("icarl", TINY), _lucir()
    assert {"kd_T", "kd_weight"} <= set(deps.stage_settings("train_phase", icarl, 1))
    assert not {"kd_T", "kd_weight"} & set(deps.stage_settings("train_phase", lucir, 1))
    assert {"lambda_base", "lambda_rule"} <= set(deps.stage_settings("train_phase", lucir, 1))
    icarl_phase = set(deps.stage_settings("train_phase", icarl, 1))
    assert not {"lambda_base", "lambda_rule", "imprint", "freeze_old"} & icarl_phase


def test_execution_settings_are_in_no_params():
    cfg = _lucir(cbf=True)
    for stage, phase in deps.run_stages(cfg):
        assert not set(deps.EXECUTION) & set(deps.stage_settings(stage, cfg, phase)), stage


def test_memory_is_the_number_kept_per_class_not_how_it_was_asked_for():
    # R_per = 4 and a fixed total of 8 over the 2 base classes keep the same 4 per class after the base phase
    per_class, total = _lucir(per_class=4), _lucir(per_class=None, total=8)
    for stage in ("select_exemplars", "evaluate_phase"):
        assert deps.stage_settings(stage, per_class, 0) == deps.stage_settings(stage, total, 0)
    assert deps.stage_settings("select_exemplars", total, 1)[deps.EXEMPLARS] == 2   # ceil(8 / 4)
    assert not {"per_class", "total"} & set(deps.stage_settings("select_exemplars", total, 1))
    assert deps.stage_settings("select_exemplars", resolve("lwf", TINY), 0)[deps.EXEMPLARS] == 0


def test_params_are_builtins_with_sorted_keys():
    def builtin(v):
        return v is None or isinstance(v, (bool, int, float, str)) or (
            isinstance(v, list) and all(map(builtin, v))) or (isinstance(v, dict) and all(map(builtin, v.values())))
    cfg = _lucir(cbf=True)
    for stage, phase in deps.run_stages(cfg):
        params = deps.stage_settings(stage, cfg, phase)
        assert list(params) == sorted(params) and builtin(params), (stage, params)


def test_readme_table_is_the_code():
    text = (REPO / "README.md").read_text()
    m = re.search(r"<!-- rerun-table -->\n(.*?)\n<!-- /rerun-table -->", text, re.S)
    assert m, "README.md lacks the <!-- rerun-table --> section"
    assert m[1].strip() == deps.rerun_table().strip(), "README's rerun table differs from ucir.deps.rerun_table()"

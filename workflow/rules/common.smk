# Config validation, grid expansion, and the input/param functions the rules use.
from ucir.codehash import submission_hashes
from ucir.config import ConfigError
from ucir.grid import base_config, phase0_config
from ucir.validate import check_config, load_schema

# The JSON schema, the dataset folders and every run's settings, before any job: one message naming the key.
try:
    RUNS = {
        r.key: r
        for r in check_config(config, load_schema(workflow.source_path("../schemas/config.schema.yaml")))
    }
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

# One entry per base model: (dataset, base, seed) -> the settings it depends on.
BASES = {(r.dataset, r.base, r.seed): base_config(r.settings).to_dict() for r in RUNS.values()}
# The package code each stage runs, hashed once per submission (ucir/codehash.py; README: What reruns when).
CODE = submission_hashes()
RUN_DIR = "results/{dataset}/{method}/{variant}/p{phases}/seed{seed}"
LOG_DIR = "logs/{dataset}/{method}/{variant}/p{phases}/seed{seed}"
BENCH_DIR = "benchmarks/{dataset}/{method}/{variant}/p{phases}/seed{seed}"


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    method="lucir|icarl|lwf|finetune|joint",
    variant="[A-Za-z0-9_.+-]+",
    phases=r"\d+",
    seed=r"\d+",
    k=r"\d+",
    base="(cosine|linear)-[a-z0-9]+(-relu|-norelu)?",


def _run(w):
    return RUNS[(w.dataset, w.method, w.variant, int(w.phases), int(w.seed))]


def _run_dir(w):
    return RUN_DIR.format(**{k: getattr(w, k) for k in ("dataset", "method", "variant", "phases", "seed")})


def get_run_params(w):
    return _run(w).settings


def get_phase_params(w):
    """Exemplar selection and evaluation after phase 0 depend only on the base model and the memory settings."""
    settings = _run(w).settings
    return phase0_config(settings).to_dict() if int(w.k) == 0 else settings


def get_base_params(w):
    return BASES[(w.dataset, w.base, int(w.seed))]


def _base_model(w):
    r = _run(w)
    return f"results/{r.dataset}/base/{r.base}/seed{r.seed}/model.pt"


def _final_model(w, k):
    """The model a phase ends with: the base model, the trained one, or its class-balance-finetuned version."""
    if k == 0:
        return _base_model(w)
    name = "model_cbf.pt" if _run(w).settings["cbf"] else "model.pt"
    return f"{_run_dir(w)}/phase{k}/{name}"


def get_selection_inputs(w):
    """select_exemplars after phase k: that phase's model before CBF (as the official code) and phase k-1's memory."""
    k = int(w.k)
    if k == 0:
        return {"model": _base_model(w)}
    return {"model": f"{_run_dir(w)}/phase{k}/model.pt", "memory": f"{_run_dir(w)}/phase{k - 1}/memory.pt"}


def get_phase_inputs(w):
    k = int(w.k)
    return {"model": _final_model(w, k - 1), "memory": f"{_run_dir(w)}/phase{k - 1}/memory.pt"}


def get_cbf_inputs(w):
    k = int(w.k)
    return {
        "model": f"{_run_dir(w)}/phase{k}/model.pt",
        "previous": _final_model(w, k - 1),
        "memory": f"{_run_dir(w)}/phase{k}/memory.pt",
    }


def get_eval_inputs(w):
    k = int(w.k)
    return {"model": _final_model(w, k), "memory": f"{_run_dir(w)}/phase{k}/memory.pt"}


def get_run_metrics(w):
    return [f"{_run_dir(w)}/phase{k}/metrics.json" for k in range(int(w.phases) + 1)]


def get_run_identity(w):
    r = _run(w)
    return {"dataset": r.dataset, "method": r.method, "variant": r.variant, "phases": r.phases,
            "seed": r.seed, "experiments": sorted(r.experiments)}


def runs_of(dataset):
    return [r for r in RUNS.values() if r.dataset == dataset]


def get_dataset_summaries(w):
    return [f"{r.path}/summary.json" for r in runs_of(w.dataset)]


def get_experiments(w):
    """{experiment: {"plot": kind, "runs": [[method, variant, phases, seed], ...],
    "grid": {"method/variant": {grid key: value}}}} for one dataset's figures."""
    out = {}
    for name, exp in config["experiments"].items():
        mine = sorted((r for r in runs_of(w.dataset) if name in r.experiments), key=lambda r: r.key)
        if mine:
            keys = list(exp.get("grid") or {})
            out[name] = {"plot": exp.get("plot", "curves"),
                         "runs": sorted([r.method, r.variant, r.phases, r.seed] for r in mine),
                         "grid": {f"{r.method}/{r.variant}": {k: r.settings[k] for k in keys} for r in mine}}
    return out


def get_dataset_params(w):
    return config["datasets"][w.dataset]


def run_outputs(r):
    """Every file a run keeps, so a deleted phase is rebuilt (with the phases after it)."""
    outs = [f"{r.path}/phase0/memory.pt", f"{r.path}/phase0/metrics.json", f"{r.path}/summary.json"]
    for k in range(1, r.phases + 1):
        outs += [f"{r.path}/phase{k}/{f}" for f in ("model.pt", "memory.pt", "metrics.json")]
        if r.settings["cbf"]:
            outs.append(f"{r.path}/phase{k}/model_cbf.pt")
    return outs


def get_final_outputs():
    outs = [f for r in RUNS.values() for f in run_outputs(r)]
    for ds in sorted({r.dataset for r in RUNS.values()}):
        if config["datasets"][ds]["source"] == "imagenet_subset":
            outs.append(f"results/{ds}/classes.txt")
        outs += expand(f"results/{ds}/tables/{{t}}.csv", t=["phases", "summary", "paper_comparison"])
        outs.append(f"results/{ds}/tables/tables.html")
        outs += expand(f"results/{ds}/figures/{{f}}.png", f=FIGURES)
    return outs

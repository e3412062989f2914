# Config validation, grid expansion, and the input/param functions the rules use.
import sys

from ucir import deps
from ucir.codehash import submission_hashes
from ucir.config import METHODS, PREPARED_SOURCES, ConfigError
from ucir.grid import BASE_DIR, BASE_PATTERN, EVALUATION_PATTERN, MEMORY_PATTERN, RUN_DIR, check_data, shared_jobs
from ucir.pipeline import figure_outputs, resources_of, rule_mismatch, script_of, table_outputs, threads_of
from ucir.validate import check_config, load_schema

# The JSON schema and every run's settings, then the data the runs read (ucir/data/check.py), before any job: one
# message naming the key, the folder or file. Checked once, by the snakemake process the user started (not again in
# each job, whose log need not repeat the warnings either). A dry run (`-n`; `workflow.dryrun` is still False while
# the Snakefile is read, the output settings know) plans without the data where their folder does not exist, and
# says so.
try:
    RUNS = {
        r.key: r
        for r in check_config(
            config,
            load_schema(workflow.source_path("../schemas/config.schema.yaml")),
            check_paths=False,
            warn=workflow.is_main_process,
        )
    }
    if workflow.is_main_process:
        _dry = workflow.dryrun or bool(getattr(workflow.output_settings, "dryrun", False))
        for _note in check_data(config, RUNS.values(), dry_run=_dry):
            print(_note, file=sys.stderr)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None

# Jobs shared by several runs (base model, selection and evaluation after the base phase): key -> a run using it.
SHARED = {}
for _r in RUNS.values():
    for _key in shared_jobs(_r):
        SHARED.setdefault(_key, _r)
# The package code of every rule, hashed once per submission (ucir/codehash.py; README: What reruns when).
CODE = submission_hashes()
# Where a base model and a run live, under results/ (and likewise under logs/ and benchmarks/).
BASE, RUN = BASE_DIR, RUN_DIR


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    method="|".join(METHODS),
    variant="[A-Za-z0-9_.+-]+",
    phases=r"\d+",
    seed=r"\d+",
    k=r"[1-9]\d*",
    base=BASE_PATTERN,
    memory=MEMORY_PATTERN,
    evaluation=EVALUATION_PATTERN,


def _run(w):
    return RUNS[(w.dataset, w.method, w.variant, int(w.phases), int(w.seed))]


def run_dir(r):
    return f"results/{r.path}"


def base_dir(r):
    return f"results/{BASE.format(dataset=r.dataset, base=r.base, seed=r.seed)}"


def base_model(r):
    return f"{base_dir(r)}/model.pt"


def base_memory(r):
    return f"{base_dir(r)}/{r.memory}/memory.pt"


def base_metrics(r):
    return f"{base_dir(r)}/{r.memory}/{r.evaluation}.json"


def _memory(r, k):
    return base_memory(r) if k == 0 else f"{run_dir(r)}/phase{k}/memory.pt"


def _final_model(r, k):
    """The model a phase ends with: the base model, the trained one, or its class-balance-finetuned version."""
    if k == 0:
        return base_model(r)
    return f"{run_dir(r)}/phase{k}/{'model_cbf.pt' if r.cfg.cbf else 'model.pt'}"


# ---- params: exactly what each job's output depends on (ucir/deps.py) -----------------------------------------

def get_stage_params(stage):
    """A run's job of `stage` after phase {k}: its slice of the run's settings."""
    def params(w):
        return deps.stage_settings(stage, _run(w).cfg, int(w.k))

    return params


def get_shared_params(stage):
    """A shared job after the base phase (train_base, select_base_exemplars, evaluate_base)."""
    def params(w):
        return deps.stage_settings(stage, _shared_run(w, stage).cfg, 0)

    return params


def get_run_identity(w):
    return _run(w).identity()


def get_run_settings(w):
    return deps.run_settings(_run(w).cfg)


def get_dataset_params(w):
    ds = config["datasets"][w.dataset]
    return {"source": ds["source"], "num_classes": ds["num_classes"]}


# ---- inputs ---------------------------------------------------------------------------------------------------

def prepared_data(dataset):
    """The folder of the dataset's arrays (rule prepare_data), for the sources read into memory; else None."""
    return f"results/{dataset}/data" if config["datasets"][dataset]["source"] in PREPARED_SOURCES else None


def with_data(w, inputs):
    """A stage job's inputs and, where its dataset has them, the prepared arrays it maps. ancient: the arrays are
    the source's, whenever they were written, so writing them again reruns no job that reads them."""
    data = prepared_data(w.dataset)
    return {**inputs, "data": ancient(data)} if data else inputs


def get_data_inputs(w):
    return with_data(w, {})


def _shared_run(w, stage):
    """A run using the shared job of `stage` these wildcards name (all such runs agree on its settings)."""
    key = (w.dataset, w.base, int(w.seed), *(w.get(k) for k in ("memory", "evaluation") if k in w.keys()))
    return SHARED[(stage, *key)]


def get_base_selection_inputs(w):
    return with_data(w, {"model": base_model(_shared_run(w, "select_exemplars"))})


def get_base_eval_inputs(w):
    r = _shared_run(w, "evaluate_phase")
    return with_data(w, {"model": base_model(r), "memory": base_memory(r)})


def get_selection_inputs(w):
    """select_exemplars after phase k: that phase's model before CBF (as the official code) and phase k-1's memory."""
    r, k = _run(w), int(w.k)
    return with_data(w, {"model": f"{run_dir(r)}/phase{k}/model.pt", "memory": _memory(r, k - 1)})


def get_phase_inputs(w):
    r, k = _run(w), int(w.k)
    return with_data(w, {"model": _final_model(r, k - 1), "memory": _memory(r, k - 1)})


def get_cbf_inputs(w):
    r, k = _run(w), int(w.k)
    return with_data(w, {"model": f"{run_dir(r)}/phase{k}/model.pt", "previous": _final_model(r, k - 1),
                         "memory": _memory(r, k)})


def get_eval_inputs(w):
    r, k = _run(w), int(w.k)
    return with_data(w, {"model": _final_model(r, k), "memory": _memory(r, k)})


def get_run_metrics(w):
    r = _run(w)
    return [base_metrics(r), *(f"{run_dir(r)}/phase{k}/metrics.json" for k in range(1, r.phases + 1))]


# ---- outputs --------------------------------------------------------------------------------------------------

def runs_of(dataset):
    return [r for r in RUNS.values() if r.dataset == dataset]


def run_outputs(r):
    """Every file a run keeps, so a deleted phase is rebuilt (with the phases after it)."""
    outs = [base_memory(r), base_metrics(r), f"{run_dir(r)}/summary.json"]
    for k in range(1, r.phases + 1):
        outs += [f"{run_dir(r)}/phase{k}/{f}" for f in ("model.pt", "memory.pt", "metrics.json")]
        if r.cfg.cbf:
            outs.append(f"{run_dir(r)}/phase{k}/model_cbf.pt")
    return outs


def get_final_outputs():
    outs = [f for r in RUNS.values() for f in run_outputs(r)]
    for ds in sorted({r.dataset for r in RUNS.values()}):
        if config["datasets"][ds]["source"] == "imagenet_subset":
            outs.append(f"results/{ds}/classes.txt")
        outs += table_outputs(ds)
        outs += figure_outputs(ds)
    return sorted(set(outs))

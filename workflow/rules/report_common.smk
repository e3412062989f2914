# The report's figure list and input functions (kept apart from the rules, as common.smk is).
from ucir.report.select import figure_runs

FIGURES = ["accuracy", "weight_norms", "components", "memory", "adaptive_weight", "confusion"]
FIG_DIR = "results/{dataset}/figures"
HEAD_RUNS = {"linear": ["icarl", "lwf", "finetune"], "cosine": ["lucir"]}      # Fig. 3: after phase 1
CONFUSION_RUNS = {"icarl": ["icarl"], "lucir": ["lucir"]}                     # Fig. 9: after the last phase


def _picked(dataset, panels):
    """{panel: the Run drawn there} for the default-variant runs ucir.report.select.figure_runs picks."""
    runs = {(r.method, r.phases, r.seed): r for r in runs_of(dataset) if r.variant == "default"}
    picked = figure_runs(runs, list(panels.values()), config["seeds"])
    return {name: runs[key] for name, key in zip(panels, picked) if key is not None}


def get_head_inputs(w):
    return {name: f"{r.path}/phase1/metrics.json" for name, r in _picked(w.dataset, HEAD_RUNS).items()}


def get_confusion_inputs(w):
    return {name: f"{r.path}/phase{r.phases}/metrics.json" for name, r in _picked(w.dataset, CONFUSION_RUNS).items()}


def report_figure(name, label):
    """A figure's outputs: the PNG, marked for the report with workflow/report/{name}.rst as caption, and the PDF."""
    png = report(f"{FIG_DIR}/{name}.png", caption=f"../report/{name}.rst", category="Figures",
                 subcategory="{dataset}", labels={"figure": label, "dataset": "{dataset}"})
    return {"png": png, "pdf": f"{FIG_DIR}/{name}.pdf"}


def report_table(name, ext="csv", label=None):
    """A table, marked for the report with workflow/report/{name}.rst as caption."""
    return report(f"results/{{dataset}}/tables/{name}.{ext}", caption=f"../report/{name}.rst", category="Tables",
                  subcategory="{dataset}", labels={"table": label or f"{name}.{ext}", "dataset": "{dataset}"})

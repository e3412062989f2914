# The report's figure list and input functions (kept apart from the rules, as common.smk is).
from ucir.pipeline import FIGURE_DIR, table_path
from ucir.report import CONFUSION_RUNS, HEAD_RUNS, TABLES
from ucir.report.select import figure_runs


def _picked(dataset, panels):
    """{panel: the Run drawn there} for the default-variant runs ucir.report.select.figure_runs picks."""
    runs = {(r.method, r.phases, r.seed): r for r in runs_of(dataset) if r.variant == "default"}
    picked = figure_runs(runs, list(panels.values()), config["seeds"])
    return {name: runs[key] for name, key in zip(panels, picked) if key is not None}


def _with_claims(dataset, panels):
    """A figure's inputs: what it draws, and where it draws anything, the dataset's claims table (aggregate's), whose
    answers to its figure's claims it gives: they depend on every claim of the table (Holm's family, claims.py)."""
    return {**panels, "claims": table_path(dataset, "claims")} if panels else {}


def get_head_inputs(w):
    panels = {name: f"{run_dir(r)}/phase1/metrics.json" for name, r in _picked(w.dataset, HEAD_RUNS).items()}
    return _with_claims(w.dataset, panels)


def get_confusion_inputs(w):
    panels = {name: f"{run_dir(r)}/phase{r.phases}/metrics.json"
              for name, r in _picked(w.dataset, CONFUSION_RUNS).items()}
    return _with_claims(w.dataset, panels)


def get_dataset_summaries(w):
    return [f"{run_dir(r)}/summary.json" for r in sorted(runs_of(w.dataset), key=lambda r: r.key)]


def _drawn(dataset, plot):
    """{experiment: its runs} for the experiments of `dataset` that feed the figure `plot`."""
    out = {}
    for name, exp in config["experiments"].items():
        mine = sorted((r for r in runs_of(dataset) if name in r.experiments), key=lambda r: r.key)
        if mine and exp.get("plot", "accuracy") == plot:
            out[name] = mine
    return out


def get_plot_inputs(plot):
    """A figure reads the summaries of the runs it draws and the dataset's claims table: editing another experiment
    reruns it only through the table (its answers)."""
    def inputs(w):
        drawn = sorted({f"{run_dir(r)}/summary.json" for mine in _drawn(w.dataset, plot).values() for r in mine})
        return _with_claims(w.dataset, {"runs": drawn} if drawn else {})

    return inputs


def get_plot_experiments(plot):
    """{experiment: {"plot": kind, "runs": [[method, variant, phases, seed], ...],
    "grid": {"method/variant": {grid key: value}}}} for the experiments a figure draws."""
    def experiments(w):
        out = {}
        for name, runs in _drawn(w.dataset, plot).items():
            keys = list(config["experiments"][name].get("grid") or {})
            out[name] = {"plot": plot, "runs": sorted([r.method, r.variant, r.phases, r.seed] for r in runs),
                         "grid": {f"{r.method}/{r.variant}": {k: r.settings[k] for k in keys} for r in runs}}
        return out

    return experiments


def report_figure(name, label):
    """A figure's outputs: the PNG, marked for the report with workflow/report/{name}.rst as caption, and the PDF."""
    png = report(f"{FIGURE_DIR}/{name}.png", caption=f"../report/{name}.rst", category="Figures",
                 subcategory="{dataset}", labels={"figure": label, "dataset": "{dataset}"})
    return {"png": png, "pdf": f"{FIGURE_DIR}/{name}.pdf"}


def report_table(name, ext="csv", label=None):
    """A table, marked for the report with workflow/report/{name}.rst as caption."""
    return report(f"results/{{dataset}}/tables/{name}.{ext}", caption=f"../report/{name}.rst", category="Tables",
                  subcategory="{dataset}", labels={"table": label or f"{name}.{ext}", "dataset": "{dataset}"})

"""Tables (pandas) and figures (matplotlib) made from the per-phase metrics."""

# Every figure: its file (results/<dataset>/figures/<name>.png), its rule and script (plot_<name>) and its function
# (ucir.report.plots.plot_<name>). The first four draw the experiments whose `plot:` names them.
FIGURES = ("accuracy", "components", "memory", "adaptive_weight", "weight_norms", "confusion")
EXPERIMENT_FIGURES = FIGURES[:4]
EXPERIMENT_PLOTS = EXPERIMENT_FIGURES + ("none",)             # an experiment's `plot:` (none: no figure)
# Every table: results/<dataset>/tables/<name>.csv, written by the aggregate rule (and all of them in tables.html).
TABLES = ("phases", "summary", "paper_comparison", "accuracy_matrix", "claims")

# The methods the paper compares (Sec. 4), by their part in its figures and claims: the one place the report names a
# method (claims.py, tables.py, figures/ablation.py and workflow/rules/report_common.smk read these; any other
# method is drawn where an experiment lists it, and compared with nothing).
OURS, ICARL, FINETUNE, LWF = "lucir", "icarl", "finetune", "lwf"
# Per panel, the methods that may fill it in order of preference (ucir.report.select.figure_runs picks the runs):
HEAD_RUNS = {"linear": (ICARL, LWF, FINETUNE), "cosine": (OURS,)}     # Fig. 3: the heads after phase 1
CONFUSION_RUNS = {ICARL: (ICARL,), OURS: (OURS,)}                     # Fig. 9: after the last phase

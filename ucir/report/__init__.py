"""Tables (pandas) and figures (matplotlib) made from the per-phase metrics."""

# Every figure: its file (results/<dataset>/figures/<name>.png), its rule and script (plot_<name>) and its function
# (ucir.report.plots.plot_<name>). The first four draw the experiments whose `plot:` names them.
FIGURES = ("accuracy", "components", "memory", "adaptive_weight", "weight_norms", "confusion")
EXPERIMENT_FIGURES = FIGURES[:4]
EXPERIMENT_PLOTS = EXPERIMENT_FIGURES + ("none",)             # an experiment's `plot:` (none: no figure)
# Every table: results/<dataset>/tables/<name>.csv, written by the aggregate rule (and all of them in tables.html).
TABLES = ("phases", "summary", "paper_comparison", "accuracy_matrix", "claims")

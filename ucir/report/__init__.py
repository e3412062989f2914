"""Tables (pandas) and figures (matplotlib) made from the per-phase metrics."""

# Every figure: its file (results/<dataset>/figures/<name>.png), its rule and script (plot_<name>) and its function
# (ucir.report.plots.plot_<name>). The first four draw the experiments whose `plot:` names them.
FIGURES = ("accuracy", "components", "memory", "adaptive_weight", "weight_norms", "confusion")
EXPERIMENT_PLOTS = FIGURES[:4] + ("none",)

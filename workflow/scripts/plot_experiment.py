"""plot_accuracy (Figs. 5/6), plot_components (Fig. 7a), plot_memory (Fig. 7b), plot_adaptive_weight (Fig. 8):
ucir.report.plots.EXPERIMENT_PLOTTERS[name] draws the experiments whose `plot:` is `name` from the per-run tables of
their runs (the rule plot_<name> passes its figure's name)."""
import sys

from ucir.report.plots import EXPERIMENT_PLOTTERS
from ucir.report.tables import read_run_tables

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot = EXPERIMENT_PLOTTERS[snakemake.params.figure]
    plot(read_run_tables(snakemake.input), snakemake.params.experiments, snakemake.output.png, snakemake.output.pdf)

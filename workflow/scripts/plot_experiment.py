"""plot_accuracy (Figs. 5/6), plot_components (Fig. 7a), plot_memory (Fig. 7b), plot_adaptive_weight (Fig. 8):
the rule's namesake in ucir.report.plots draws the experiments of its kind from the per-run tables of their runs."""
import sys

from ucir.report import plots
from ucir.report.tables import read_run_tables

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot = getattr(plots, snakemake.rule)
    plot(read_run_tables(snakemake.input), snakemake.params.experiments, snakemake.output.png, snakemake.output.pdf)

"""plot_adaptive_weight: Fig. 8, adaptive vs fixed loss weight,
from the per-run tables of the runs it draws."""
import sys

from ucir.report.plots import plot_adaptive_weight
from ucir.report.tables import read_run_tables

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot_adaptive_weight(read_run_tables(snakemake.input), snakemake.params.experiments, snakemake.output.png,
                snakemake.output.pdf)

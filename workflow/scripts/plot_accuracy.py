"""plot_accuracy: Figs. 5/6, accuracy after each phase,
from the per-run tables of the runs it draws."""
import sys

from ucir.report.plots import plot_accuracy
from ucir.report.tables import read_run_tables

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot_accuracy(read_run_tables(snakemake.input), snakemake.params.experiments, snakemake.output.png,
                    snakemake.output.pdf)

"""plot_memory: Fig. 7(b), average incremental accuracy vs reserved samples per class,
from the per-run tables of the runs it draws."""
import sys

from ucir.report.plots import plot_memory
from ucir.report.tables import read_run_tables

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot_memory(read_run_tables(snakemake.input), snakemake.params.experiments, snakemake.output.png,
                  snakemake.output.pdf)

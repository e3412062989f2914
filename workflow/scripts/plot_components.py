"""plot_components: Fig. 7(a), CNN average incremental accuracy of each component,
from the per-run tables of the runs it draws."""
import sys

from ucir.report.plots import plot_components
from ucir.report.tables import read_run_tables

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot_components(read_run_tables(snakemake.input), snakemake.params.experiments, snakemake.output.png,
                    snakemake.output.pdf)

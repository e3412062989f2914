"""plot_accuracy: Figs. 5/6, accuracy after each phase (from the per-phase table)."""
import sys

import pandas as pd

from ucir.report.plots import accuracy_curves

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    accuracy_curves(pd.read_csv(snakemake.input.phases), snakemake.params.experiments, snakemake.output.png,
                    snakemake.output.pdf)

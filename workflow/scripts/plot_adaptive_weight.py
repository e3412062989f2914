"""plot_adaptive_weight: Fig. 8, adaptive vs fixed loss weight (from the per-phase table)."""
import sys

import pandas as pd

from ucir.report.plots import lambda_bars

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    lambda_bars(pd.read_csv(snakemake.input.phases), snakemake.params.experiments, snakemake.output.png,
                snakemake.output.pdf)

"""plot_memory: Fig. 7(b), average incremental accuracy vs reserved samples per class (from the per-phase table)."""
import sys

import pandas as pd

from ucir.report.plots import memory_curves

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    memory_curves(pd.read_csv(snakemake.input.phases), snakemake.params.experiments, snakemake.output.png,
                  snakemake.output.pdf)

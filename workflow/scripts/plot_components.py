"""plot_components: Fig. 7(a), CNN average incremental accuracy of each component (from the per-phase table)."""
import sys

import pandas as pd

from ucir.report.plots import components_bars

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    components_bars(pd.read_csv(snakemake.input.phases), snakemake.params.experiments, snakemake.output.png,
                    snakemake.output.pdf)

"""plot_accuracy (Figs. 5/6), plot_components (Fig. 7a), plot_memory (Fig. 7b), plot_adaptive_weight (Fig. 8):
the rule's namesake in ucir.report.plots draws the experiments of its kind from their runs' summaries, and answers
its claims from those and the other runs the claims read, as tables/claims.csv does."""
import sys

from ucir.io import load_json
from ucir.report import plots

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot = getattr(plots, snakemake.rule)
    plot([load_json(p) for p in snakemake.input], snakemake.params.experiments, snakemake.output.png, snakemake.output.pdf)

"""plot_accuracy (Figs. 5/6), plot_components (Fig. 7a), plot_memory (Fig. 7b), plot_adaptive_weight (Fig. 8):
ucir.report.plots.EXPERIMENT_PLOTTERS[name] draws the experiments whose `plot:` is `name` from their runs' summaries
(the rule plot_<name> passes its figure's name), with the answers of the dataset's claims table (tables/claims.csv)
to its figure's claims."""
import sys

from ucir.io import load_json
from ucir.report.claims import read_claims
from ucir.report.plots import EXPERIMENT_PLOTTERS

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    plot = EXPERIMENT_PLOTTERS[snakemake.params.figure]
    plot([load_json(p) for p in snakemake.input.get("runs", [])], read_claims(snakemake.input.get("claims")),
         snakemake.params.experiments, snakemake.output.png, snakemake.output.pdf)

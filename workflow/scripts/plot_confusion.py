"""plot_confusion: Fig. 9, the confusion matrices of the last phase of one run per method (CNN and NME), with the
answers of the dataset's claims table (tables/claims.csv) to Fig. 9's claims."""
import sys

from ucir.io import load_json
from ucir.report.claims import read_claims
from ucir.report.plots import plot_confusion

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    paths = {m: snakemake.input.get(m) for m in snakemake.params.methods}
    print("\n".join(f"{m}: {p}" for m, p in paths.items()), file=log)
    plot_confusion({m: load_json(p) if p else None for m, p in paths.items()},
                   read_claims(snakemake.input.get("claims")), snakemake.output.png, snakemake.output.pdf)

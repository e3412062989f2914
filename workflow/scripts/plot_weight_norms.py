"""plot_weight_norms: Fig. 3, the last layer's weight norms and biases after one phase (linear head vs cosine head),
from the phase-1 metrics of one run per head, with the answers of the dataset's claims table (tables/claims.csv) to
Fig. 3's claims."""
import sys

from ucir.io import load_json
from ucir.report.claims import read_claims
from ucir.report.plots import plot_weight_norms

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    linear, cosine = (snakemake.input.get(k) for k in ("linear", "cosine"))
    print(f"linear head: {linear}\ncosine head: {cosine}", file=log)
    plot_weight_norms(load_json(linear) if linear else None, load_json(cosine) if cosine else None,
                      read_claims(snakemake.input.get("claims")), snakemake.output.png, snakemake.output.pdf)

"""aggregate: every run of a dataset into the tidy tables."""
import sys

from ucir.io import load_json
from ucir.report.tables import aggregate

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    phases, summary, comparison = aggregate([load_json(p) for p in snakemake.input])
    phases.to_csv(snakemake.output.phases, index=False)
    summary.to_csv(snakemake.output.summary, index=False)
    comparison.to_csv(snakemake.output.comparison, index=False)
    print(summary.to_string(), file=log)

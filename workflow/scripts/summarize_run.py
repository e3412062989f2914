"""summarize_run: one run's per-phase table and its summary (average incremental accuracy, forgetting)."""
import sys

from ucir.io import load_json
from ucir.report.tables import run_summary, write_run_outputs

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    metrics = [load_json(p) for p in snakemake.input]
    summary = run_summary(metrics, snakemake.params.identity, snakemake.params.settings)
    write_run_outputs(summary, snakemake.output.summary, snakemake.output.table)
    print(f"summarised {len(metrics)} phases", file=log)

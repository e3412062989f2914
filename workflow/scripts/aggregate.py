"""aggregate: every run of a dataset into the tidy tables (CSV), and the same tables as one HTML page."""
import sys

from ucir.io import load_json
from ucir.report.html import tables_html
from ucir.report.tables import aggregate

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    phases, summary, comparison = aggregate([load_json(p) for p in snakemake.input])
    phases.to_csv(snakemake.output.phases, index=False)
    summary.to_csv(snakemake.output.summary, index=False)
    comparison.to_csv(snakemake.output.comparison, index=False)
    title = f"Tables of dataset {snakemake.wildcards.dataset}"
    page = tables_html({"Comparison with the paper (paper_comparison.csv)": comparison,
                        "Summary per setting (summary.csv)": summary,
                        "Every run and phase (phases.csv)": phases}, title)
    with open(snakemake.output.html, "w") as f:
        f.write(page)
    print(summary.to_string(), file=log)

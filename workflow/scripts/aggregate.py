"""aggregate: every run of a dataset into the tidy tables (CSV), and the same tables as one HTML page."""
import sys

from ucir.io import load_json
from ucir.report.claims import P_DECIMALS, claims_table
from ucir.report.html import tables_html
from ucir.report.tables import accuracy_matrix, accuracy_matrix_wide, aggregate, write_csv

with open(snakemake.log[0], "w") as log:
    sys.stderr = log
    summaries = [load_json(p) for p in snakemake.input]
    phases, summary, comparison = aggregate(summaries)
    matrix = accuracy_matrix(summaries)
    write_csv(phases, snakemake.output.phases)
    write_csv(summary, snakemake.output.summary)
    write_csv(comparison, snakemake.output.paper_comparison)
    write_csv(matrix, snakemake.output.accuracy_matrix)
    claims = claims_table(summaries)
    write_csv(claims, snakemake.output.claims, P_DECIMALS)
    title = f"Tables of dataset {snakemake.wildcards.dataset}"
    page = tables_html({"The paper's claims, paired over class orders (claims.csv)": claims,
                        "Comparison with the paper (paper_comparison.csv)": comparison,
                        "Summary per setting (summary.csv)": summary,
                        "Every run and phase (phases.csv)": phases,
                        "Accuracy matrix: after each phase, per class group (accuracy_matrix.csv)":
                            accuracy_matrix_wide(matrix)}, title)
    with open(snakemake.output.html, "w") as f:
        f.write(page)
    print(summary.to_string(), file=log)

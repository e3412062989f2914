"""The report's tables and figures read at a glance (issue 25): every table's answer and key columns visible at
1,400 px, titles of at most two lines with the rest in the caption, every band and marker in its legend.

The tables.html check renders the page in a headless Chromium (Debian's `chromium`; .ci/run installs it) and reads
where each column ends; without a browser it is skipped, and the page's structure is still checked."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from test_report import NO_CLAIMS, _fig, _head_metrics, _identity, _out, _runs, _summary
from ucir.report import plots
from ucir.report.claims import claims_table
from ucir.report.figures.accuracy import BAND
from ucir.report.figures.common import CAPTION, TITLE_LINES, caption_of
from ucir.report.html import LEAD, ordered, tables_html
from ucir.report.tables import accuracy_matrix, accuracy_matrix_wide, aggregate

# the grid values the demo's variants stand for (their names: ucir.grid)
GRID = {"default": {"lambda_rule": "code", "per_class": 10}, "default_lambda_rulefixed": {"lambda_rule": "fixed"},
        "default_per_class5": {"per_class": 5}}
WIDTH = 1400                                        # px: a common laptop browser window
# the demo's runs (configs/demo.yaml): LUCIR and iCaRL over two class orders, the rest over one
DEMO_RUNS = [("lucir", "default", s) for s in (1993, 1994)] + [("icarl", "default", s) for s in (1993, 1994)] + \
    [(m, "default", 1993) for m in ("lwf", "finetune", "joint")] + \
    [("lucir", v, 1993) for v in ("cn", "cn_lc", "cbf", "default_per_class5", "default_lambda_rulefixed")] + \
    [("icarl", "default_per_class5", 1993)]


def _demo_like_summaries() -> list[dict]:
    out = []
    for i, (method, variant, seed) in enumerate(DEMO_RUNS):
        s = _summary(seed, [80 - i, 60 - i, 40 + i], method=method, variant=variant)
        s["config"]["per_class"] = 5 if variant.endswith("per_class5") else 10
        s["head_phase1"] = {"norm_old": 1.0, "norm_new": 1.2 + i / 10, "bias_old": 0.0, "bias_new": 0.1,
                            "scale_old": 10.0, "scale_new": 10.0}
        s["prediction_share"] = {clf: {"predicted_new": 40.0 + i, "true_new": 33.3} for clf in ("cnn", "nme")}
        out.append(s)
    return out


def _demo_like_page() -> str:
    """The page aggregate.py writes, for runs shaped like the demo's."""
    summaries = _demo_like_summaries()
    phases, summary, comparison = aggregate(summaries)
    return tables_html({"The paper's claims (claims.csv)": claims_table(summaries),
                        "Comparison with the paper (paper_comparison.csv)": comparison,
                        "Summary per setting (summary.csv)": summary, "Every run and phase (phases.csv)": phases,
                        "Accuracy matrix (accuracy_matrix.csv)": accuracy_matrix_wide(accuracy_matrix(summaries))},
                       "Tables of dataset d")


def _headings(page: str) -> list[list[str]]:
    """Each table's column headings, in the order shown."""
    return [[re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th>(.*?)</th>", head)]
            for head in re.findall(r"<thead>(.*?)</thead>", page)]


def test_the_claims_table_shows_its_answer_among_the_first_columns():
    claims = claims_table(_demo_like_summaries())
    assert list(claims.columns)[-1] == "answer"                     # the CSV keeps its order: answer last ...
    heads = _headings(_demo_like_page())
    assert len(heads) == 5 and heads[0][:3] == list(LEAD)          # ... the page puts it third
    assert sorted(heads[0]) == sorted(claims.columns)              # every column still shown
    assert list(ordered(claims.drop(columns="answer")).columns) == list(claims.drop(columns="answer").columns)


def test_long_text_wraps_numbers_do_not():
    page = _demo_like_page()
    claims = page.split("<table>")[1]
    statement = next(c for c in re.findall(r"<td class='(\w+)'>([^<]*)</td>", claims) if "Sec. 4" in c[1])
    assert statement[0] == "text"
    assert "td.num{text-align:right;white-space:nowrap}" in page and "td.text{" in page
    assert "avg_<wbr>inc_<wbr>cnn_<wbr>mean" in page                # headings break at their underscores


def test_p_values_keep_the_decimals_of_claims_csv():
    from ucir.report.claims import P_DECIMALS
    page = tables_html({"claims": pd.DataFrame({"claim": ["x"], "p_t": [0.061123], "a_mean": [53.2], "n": [2]})}, "T")
    assert P_DECIMALS["p_t"] == 4 and "<td class='num'>0.0611</td>" in page
    assert "<td class='num'>53.20</td>" in page and "<td class='num'>2</td>" in page


PROBE = """<script>window.addEventListener("load", () => {
  const tables = [...document.querySelectorAll("table")].map((t) =>
    Object.fromEntries([...t.querySelectorAll("thead th")].map((h) => [h.textContent,
                                                                     h.getBoundingClientRect().right])));
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({width: document.documentElement.clientWidth, tables: tables});
  document.body.appendChild(pre);
});</script>"""


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_every_table_shows_its_key_columns_at_1400_px(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless Chromium (apt-get install -y chromium)")
    page = tmp_path / "tables.html"
    page.write_text(_demo_like_page().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},900",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the page's probe did not run:\n{proc.stderr[-3000:]}"
    probe = json.loads(found[1].replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                       .replace("&gt;", ">"))
    assert 0 < probe["width"] <= WIDTH and len(probe["tables"]) == 5
    key = ("claim", "answer", "method", "variant", "classifier", "phases", "difference", "avg_inc_cnn_mean",
           "cnn_all", "group 0")
    for columns in probe["tables"]:
        shown = {c: right for c, right in columns.items() if c in key}
        assert shown and all(right <= probe["width"] for right in shown.values()), (shown, probe["width"])
    assert "answer" in probe["tables"][0]
    # at this width every demo table fits whole: no column is off-screen
    assert max(right for t in probe["tables"] for right in t.values()) <= probe["width"]


# ---- figures --------------------------------------------------------------------------------------------------

def _per_class(spec) -> dict:
    """{(method, variant): R_per} of the runs in spec, as the demo's variants have them."""
    return {(m, v): GRID[v]["per_class"] for m, v, _, _ in spec}


def _demo_like_figures(tmp_path) -> dict:
    """Every figure of the report on demo-shaped runs whose numbers make each figure write its notes."""
    acc = {("lucir", "default", 2, s): ([50, 40, 30 + s], [55, 45, 35]) for s in (1, 2)}
    acc.update({("icarl", "default", 2, s): ([60] * 3, [35 + s] * 3) for s in (1, 2)})
    comp = {("lucir", v, 2, 1): [a] * 3 for v, a in (("cn", 60), ("cn_lc", 50), ("default", 70), ("cbf", 65))}
    lam = {("lucir", "default", 2, 1): [50] * 3, ("lucir", "default_lambda_rulefixed", 2, 1): [55] * 3}
    mem = {(m, v, 2, 1): ([60 - k] * 3, [50 + k] * 3) for m in ("lucir", "icarl")
           for v, k in (("default", 0), ("default_per_class5", 9))}
    linear = _head_metrics("icarl", [2.0, 2.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5], num_old=2)
    cosine = _head_metrics("lucir", [0.9, 0.95, 0.92, 0.93], None, num_old=2, sigma=3.0)
    even, biased = [[8, 2], [3, 7]], [[1, 9], [0, 10]]

    def conf(method, c):
        return {"run": _identity(method, phases=1), "config": {"base_classes": 1}, "num_old": 1, "classes_seen": 2,
                "cnn": {"all": 50.0}, "confusion_cnn": c, "nme": {"all": 50.0}, "confusion_nme": even}

    def exps(kind, spec, key=None):
        grid = {f"{m}/{v}": {key: GRID[v][key]} for m, v, _, _ in spec} if key else {}
        return {kind: {"plot": kind, "runs": [list(k) for k in spec], "grid": grid}}

    return {
        "accuracy": _fig("accuracy", _runs(acc), exps("accuracy", acc), _out(tmp_path, "acc")),
        "components": _fig("components", _runs(comp), exps("components", comp), _out(tmp_path, "comp")),
        "adaptive_weight": _fig("adaptive_weight", _runs(lam), exps("adaptive_weight", lam, "lambda_rule"),
                                _out(tmp_path, "lam")),
        "memory": _fig("memory", _runs(mem, _per_class(mem)), exps("memory", mem, "per_class"), _out(tmp_path, "mem")),
        "weight_norms": plots.plot_weight_norms(linear, cosine, NO_CLAIMS, *_out(tmp_path, "norms")),
        "confusion": plots.plot_confusion({"icarl": conf("icarl", even), "lucir": conf("lucir", biased)},
                                          claims_table(_demo_like_summaries()), *_out(tmp_path, "conf")),
    }


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return _demo_like_figures(tmp_path_factory.mktemp("figures"))


def _titles(fig) -> list[str]:
    return [t.get_text() for t in [fig._suptitle, *(ax.title for ax in fig.axes)] if t is not None and t.get_text()]


@pytest.mark.parametrize("name", ["accuracy", "components", "adaptive_weight", "memory", "weight_norms",
                                  "confusion"])
def test_titles_keep_to_two_lines_and_the_rest_is_in_the_caption(figures, name):
    fig = figures[name]
    assert _titles(fig), name
    for title in _titles(fig):
        assert title.count("\n") < TITLE_LINES, f"{name}: title of {title.count(chr(10)) + 1} lines: {title!r}"
    caption = caption_of(fig)
    assert caption, f"{name}: these runs should make the figure note something"
    assert "here" in caption or "stored" in caption or "class order" in caption, caption
    # the caption lies under everything else the figure draws
    renderer = FigureCanvasAgg(fig).get_renderer()
    (text,) = [t for t in fig.texts if t.get_gid() == CAPTION]
    lowest = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
    assert text.get_window_extent(renderer).y1 <= lowest + 1


def test_the_accuracy_band_is_in_the_legend(figures, tmp_path):
    ax = figures["accuracy"].axes[0]                # two class orders per curve: a band, and its legend entry
    assert ax.collections and BAND in [t.get_text() for t in ax.get_legend().get_texts()]
    one = {("lucir", "default", 2, 1): [50, 40, 30], ("icarl", "default", 2, 1): [60, 50, 40]}
    ax = _fig("accuracy", _runs(one), {"main": {"plot": "accuracy", "runs": [list(k) for k in one]}},
              _out(tmp_path, "one")).axes[0]
    assert not ax.collections and BAND not in [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_memory_legend_shows_error_bars_only_where_they_are_drawn(figures, tmp_path):
    bars = [c for c in figures["memory"].axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert bars and not any(c.has_yerr for c in bars)               # one class order: no error bar anywhere
    two = {(m, v, 2, s): ([60 - k + s] * 3, [50 + k] * 3) for m in ("lucir", "icarl") for s in (1, 2)
           for v, k in (("default", 0), ("default_per_class5", 9))}
    grid = {f"{m}/{v}": {"per_class": GRID[v]["per_class"]} for m, v, _, _ in two}
    fig = _fig("memory", _runs(two, _per_class(two)), {"memory": {"plot": "memory", "runs": [list(k) for k in two],
                                                                  "grid": grid}}, _out(tmp_path, "two"))
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert all(c.has_yerr for c in bars if "CNN" in c.get_label())  # the CNN curves spread over two orders


def test_the_weight_norms_legend_names_the_dashed_means(figures):
    for ax in figures["weight_norms"].axes:
        assert all("dashed: their mean" in t.get_text() for t in ax.get_legend().get_texts())

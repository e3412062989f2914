"""Shared styling, labels and helpers of the figures (matplotlib, Agg backend, sized for a paper column or page)."""
from __future__ import annotations

import textwrap
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..claims import ALPHA, MIN_ORDERS, figure_claims  # noqa: E402
from ..tables import phase_table  # noqa: E402

LABELS = {"lucir": "Ours", "icarl": "iCaRL", "lwf": "LwF", "finetune": "Finetune", "joint": "Joint"}
COLORS = {"lucir": "tab:red", "icarl": "tab:blue", "lwf": "tab:green", "finetune": "tab:gray", "joint": "black"}
COLUMN, PAGE = 3.4, 7.0                 # inches: one column / the full width of a two-column paper
NO_RUNS = "no runs for this figure in the configuration"
TITLE_LINES = 2                         # a title's most lines; what a figure says beyond them goes to its caption
NOTES = "\n\u2063"                      # in a title from titled(): a line break and an invisible separator before
                                        # each note, where save() cuts the notes off into the caption
CAPTION = "caption"                     # the gid of the caption's text (caption_of)
CAPTION_SIZE = 6                        # points
STYLE = {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6.5,
         "ytick.labelsize": 6.5, "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
         "figure.dpi": 100}


def label(method: str, variant: str = "default", clf: str | None = None) -> str:
    """The paper's names: Ours-CNN, iCaRL-NME, ...; non-default variants in brackets."""
    name = LABELS.get(method, method)
    if variant != "default":
        name += f" [{variant}]"
    return f"{name}-{clf.upper()}" if clf else name


def color(method: str) -> str | None:
    return COLORS.get(method)


@contextmanager
def style():
    with plt.rc_context(STYLE):
        yield


def save(fig, png: str, pdf: str):
    """Write PNG (200 dpi) and PDF, close the figure and return it (its artists stay readable). The notes of every
    title (titled) move into the caption under the figure first."""
    _caption(fig)
    fig.savefig(png, dpi=200)
    fig.savefig(pdf)
    plt.close(fig)
    return fig


def placeholder(png: str, pdf: str, title: str, message: str = NO_RUNS):
    """The figure written when its runs are absent: the title and a sentence saying why it is empty."""
    with style():
        fig, ax = plt.subplots(figsize=(COLUMN, 1.2))
        ax.axis("off")
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
        return save(fig, png, pdf)


def runs_of_kind(experiments: dict, kind: str) -> list[list]:
    """All [method, variant, phases, seed] of the experiments drawn as `kind`, without repeats."""
    runs = {tuple(r) for e in experiments.values() if e.get("plot") == kind for r in e["runs"]}
    return [list(r) for r in sorted(runs)]


def grid_values(experiments: dict, kind: str) -> tuple[list[str], dict[tuple, dict]]:
    """The grid keys of the experiments drawn as `kind`, and {(method, variant): {key: value}} of their runs."""
    keys: list[str] = []
    values: dict[tuple, dict] = {}
    for e in experiments.values():
        if e.get("plot") != kind:
            continue
        for mv, point in (e.get("grid") or {}).items():
            method, variant = mv.split("/", 1)
            values.setdefault((method, variant), {}).update(point)
            keys += [k for k in point if k not in keys]
    return keys, values


def select_runs(phases: pd.DataFrame, runs: list[list]) -> pd.DataFrame:
    keys = pd.DataFrame(runs, columns=["method", "variant", "phases", "seed"])
    return phases.merge(keys, on=["method", "variant", "phases", "seed"])


def phases_title(p: int) -> str:
    return f"{p} phase{'s' if p != 1 else ''}"


def titled(title: str, notes: list[str], width: int = 72) -> str:
    """The title, wrapped at `width` characters, and its notes (what the figure's numbers are, or that the paper's
    effect is absent in these data) after it, each behind the NOTES separator: save() leaves the title in place and
    puts the notes in the figure's caption, so that a title keeps to TITLE_LINES lines however much it notes."""
    lines = [w for line in title.split("\n") for w in textwrap.wrap(line, width, break_on_hyphens=False) or [""]]
    return "\n".join(lines) + "".join(NOTES + n for n in notes)


def _titles(fig) -> list[tuple[object, str]]:
    """(text artist, prefix of its notes in the caption) of every title: the figure's, then each panel's (named
    by its title where the figure has several panels)."""
    out = [(fig._suptitle, "")] if fig._suptitle is not None else []
    axes = [ax for ax in fig.axes if ax.get_title()]
    for ax in axes:
        name = " ".join(ax.get_title().split(NOTES)[0].split("\n"))
        out.append((ax.title, f"{name}: " if len(axes) > 1 else ""))
    return out


def _caption(fig) -> None:
    """Moves the notes of every title into one caption under everything the figure draws, wrapped to its width."""
    notes = []
    for text, prefix in _titles(fig):
        title, *rest = text.get_text().split(NOTES)
        text.set_text(title)
        notes += [prefix + n.replace("Fig. ", "Fig.\u00a0") for n in rest]          # never break "Fig. 3"
    if not notes:
        return
    fig.canvas.draw()                                           # the layout settled: where the lowest artist ends
    bottom = fig.get_tightbbox(fig.canvas.get_renderer()).y0                                        # inches
    chars = int(fig.get_figwidth() * 72 / (0.5 * CAPTION_SIZE))     # a character: about half a point size wide
    body = "\n".join(textwrap.fill(n, chars, break_on_hyphens=False) for n in notes)
    fig.text(0.0, (bottom - 0.05) / fig.get_figheight(), body, ha="left", va="top", fontsize=CAPTION_SIZE,
             gid=CAPTION)


def caption_of(fig) -> str:
    """The caption save() wrote under the figure ("" if its titles had no notes)."""
    return "\n".join(t.get_text() for t in fig.texts if t.get_gid() == CAPTION)


def suptitle(fig, text: str, fontsize: float = 6.5) -> None:
    """The figure's title (from titled(): its notes go to the caption) above the panels; the figure grows by the
    title's lines, so that the panels keep their height."""
    fig.set_figheight(fig.get_figheight() + 0.11 * text.split(NOTES)[0].count("\n"))
    fig.suptitle(text, fontsize=fontsize)


def orders_note(counts, what: str = "bar", marked: bool = True) -> str:
    """How many runs (class orders) each bar or point is, and what the error bars are; marked: the figure writes n
    at each bar or point where the counts differ."""
    counts = sorted({int(c) for c in counts})
    if counts == [1]:
        return f"each {what}: 1 class order (seed), so no error bar"
    if len(counts) == 1:
        return f"each {what}: mean over {counts[0]} class orders (seeds), error bar ±1 sd"
    where = f", written at each {what}" if marked else ""
    return (f"each {what}: mean over n = {counts[0]}-{counts[-1]} class orders (seeds{where}), error bar ±1 sd "
            f"where n > 1")


# ---- the claims' answers (one judge: the figures show what tables/claims.csv answers) ---------------------------
RELATIONS = {">": ">", ">=": "≥", "~": "≈"}
VERDICT_HEADER = (f"the paper's claims as claims.csv answers them (95 % t interval of the paired differences over "
                  f"class orders; Holm over all claims of the dataset's table, level {ALPHA:g}; fewer than "
                  f"{MIN_ORDERS} orders: too few)")


def figure_inputs(summaries: list[dict], claims: pd.DataFrame, experiments: dict,
                  kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the phases of the runs the figure draws, the claims table's rows about its figure): summaries of the drawn
    runs; claims: the dataset's claims table (tables/claims.csv, ucir.report.claims.read_claims)."""
    runs = runs_of_kind(experiments, kind)
    phases = phase_table(summaries)
    drawn = select_runs(phases, runs) if runs else phases.iloc[0:0]
    return drawn, figure_claims(claims, kind)


def verdict(row) -> str:
    """'Ours-CNN > iCaRL-CNN: unclear (+4.4 [-1.2, +9.9], n = 5, Holm p 0.21)' for one row of the claims table."""
    head = f"{row.a} {RELATIONS[row.relation]} {row.b}: {row.answer}"
    if row.n < MIN_ORDERS:
        return f"{head} (n = {row.n})"
    p = "< 0.0001" if row.p_holm < 1e-4 else f"{row.p_holm:.2g}"
    return f"{head} ({row.diff_mean:+.1f} [{row.ci_low:+.1f}, {row.ci_high:+.1f}], n = {row.n}, Holm p {p})"


def verdict_notes(claims: pd.DataFrame, by_phases: bool = True) -> list[str]:
    """One note per claim row (prefixed with its number of phases where the rows have several), after the header;
    [] without rows."""
    if claims.empty:
        return []
    several = by_phases and claims.phases.nunique() > 1
    return [VERDICT_HEADER] + [(f"{phases_title(r.phases)}: " if several else "") + verdict(r)
                               for r in claims.itertuples()]

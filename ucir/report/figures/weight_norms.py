"""Fig. 3: the last layer after one incremental phase. In the paper, a linear head (iCaRL, Eq. 3) ends up with larger
weights and biases for the new classes than for the old ones; LUCIR's cosine head (Eq. 4) keeps the old rows frozen
and imprints the new ones scaled to the old rows' mean norm, and its scores do not depend on the norms at all. The
panels draw one run; the caption gives the claims table's answers to Fig. 3's claims over every class order (never a
verdict of its own). The cosine scale is the paper's η (the code's attribute `sigma`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.legend_handler import HandlerTuple

from ..claims import figure_claims
from .common import PAGE, label, placeholder, save, style, suptitle, titled, verdict_notes

TITLE = "Last-layer weights after one incremental phase (Fig. 3)"
OLD, NEW = "tab:blue", "tab:red"


def _scatter(ax, values: list[float], num_old: int, what: str) -> None:
    old, new = values[:num_old], values[num_old:]
    groups = ((range(num_old), old, OLD, "old"), (range(num_old, len(values)), new, NEW, "new"))
    handles, labels = [], []
    for xs, ys, c, name in groups:
        if not ys:
            continue
        mean = sum(ys) / len(ys)
        dots = ax.scatter(list(xs), ys, s=6, color=c, lw=0)
        line = ax.hlines(mean, xs[0], xs[-1], color=c, lw=0.8, ls="--")
        handles.append((dots, line))                    # one legend entry: the classes' dots and their mean's dashes
        labels.append(f"{name} classes, dashed: their mean {mean:.3g}")
    ax.set_xlabel("class index (in the class order)")
    ax.set_ylabel(what)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None)}, frameon=False, markerscale=1.5,
              loc="upper center", bbox_to_anchor=(0.5, -0.2), handletextpad=0.3)


def _setting(m: dict) -> str:
    r = m["run"]
    return f"{r['phases']} phase{'s' if r['phases'] != 1 else ''}, seed {r['seed']}, phase {m['phase']}"


def plot_weight_norms(linear: dict | None, cosine: dict | None, claims: pd.DataFrame, png: str, pdf: str):
    """Panels: the linear head's weight norms and biases (old blue, new red, dashed = group mean), and the cosine
    head's weight norms. linear, cosine: per-phase metrics dicts (metrics.json of phase 1), or None; claims: the
    dataset's claims table (tables/claims.csv), whose answers to Fig. 3's claims the caption gives."""
    panels = []
    if linear is not None:
        name = label(linear["run"]["method"], linear["run"]["variant"])
        norms, bias, n_old = linear["head"]["weight_norms"], linear["head"]["bias"], linear["num_old"]
        panels.append((linear, norms, f"{name} (linear head)", "weight norm ‖θ‖", []))
        if bias is not None:
            panels.append((linear, bias, f"{name} (linear head)", "bias b", []))
    if cosine is not None:
        # What enters a cosine head's logits is eta * ||theta_bar_i|| = eta for every class (Eq. 4): the rows are
        # normalised, so the stored norms (which SGD grows on the trained rows) cannot favour any class.
        name = label(cosine["run"]["method"], cosine["run"]["variant"])
        norms, eta = cosine["head"]["weight_norms"], cosine["head"].get("sigma")    # the code's sigma = Eq. 4's eta
        n_old = cosine["num_old"]
        stored = (f"stored ‖θ‖ old {sum(norms[:n_old]) / n_old:.2f}, new "
                  f"{sum(norms[n_old:]) / max(len(norms) - n_old, 1):.2f}, normalised away")
        scale = [eta if eta is not None else 1.0] * len(norms)
        title = f"{name} (cosine head, η = {eta:.2f})" if eta is not None else f"{name} (cosine head)"
        panels.append((cosine, scale, title, "logit scale η‖θ̄‖", [stored]))
    if not panels:
        return placeholder(png, pdf, TITLE)
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(PAGE * len(panels) / 3, 2.6), squeeze=False,
                                 layout="constrained")
        for ax, (m, values, title, what, notes) in zip(axes[0], panels):
            _scatter(ax, values, m["num_old"], what)
            ax.set_title(titled(f"{title}\n{what.split()[-1]}, {_setting(m)}", notes, width=48))
        notes = verdict_notes(figure_claims(claims, "weight_norms"))
        if notes:
            suptitle(fig, titled(TITLE, notes, width=50 * len(panels)), fontsize=7)
        return save(fig, png, pdf)

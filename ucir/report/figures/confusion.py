"""Fig. 9: confusion matrices of the last phase, entries shown as log(1 + count); each title gives the overall top-1
and the share of predictions that go to the last phase's new classes (iCaRL-CNN's is the largest in the paper). The
panels draw one run; the caption gives the claims table's answers to Fig. 9's claims over every class order."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..claims import figure_claims
from .common import PAGE, label, placeholder, save, style, suptitle, titled, verdict_notes

TITLE = "Confusion matrices after the last phase, log(1 + count) (Fig. 9)"


def new_share(conf: np.ndarray, num_old: int) -> tuple[float, float]:
    """(% of the predictions that are a new class, % of the test samples that are), new = index >= num_old."""
    total = conf.sum()
    return 100 * conf[:, num_old:].sum() / total, 100 * conf[num_old:, :].sum() / total


def panels_of(metrics: dict[str, dict | None]) -> list[tuple]:
    """(title, log(1 + C x C counts) or None, top-1 on all classes, new_share or None, metrics) per method and
    classifier, in the order given (the paper's: iCaRL-CNN, iCaRL-NME, Ours-CNN, Ours-NME)."""
    out = []
    for method, m in metrics.items():
        for clf in ("cnn", "nme"):
            conf = (m or {}).get(f"confusion_{clf}")
            acc = ((m or {}).get(clf) or {}).get("all")
            name = label(method, m["run"]["variant"] if m else "default", clf)
            if conf is None:
                out.append((name, None, acc, None, m))
                continue
            conf = np.asarray(conf, dtype=float)
            out.append((name, np.log1p(conf), acc, new_share(conf, m["num_old"]), m))
    return out


def plot_confusion(metrics: dict[str, dict | None], claims: pd.DataFrame, png: str, pdf: str):
    """metrics: {method: that run's last-phase metrics dict, or None when it has no such run}; claims: the dataset's
    claims table (tables/claims.csv), whose answers to Fig. 9's claims the caption gives. One shared colour scale;
    rows = true class, columns = predicted; ticks at the first class, the first class after the base classes and the
    last class."""
    panels = panels_of(metrics)
    if not any(p[1] is not None for p in panels):
        return placeholder(png, pdf, TITLE)
    vmax = max(float(p[1].max()) for p in panels if p[1] is not None)
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(PAGE, PAGE / len(panels) + 0.5), squeeze=False,
                                 layout="constrained")
        for ax, (name, mat, acc, share, m) in zip(axes[0], panels):
            if mat is None:
                ax.axis("off")
                ax.set_title(name)
                ax.text(0.5, 0.5, "no such run" if m is None else "not evaluated", ha="center",
                        transform=ax.transAxes)
                continue
            im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name} (top-1 {acc:.2f}%)\n{share[0]:.0f}% predicted new (true {share[1]:.0f}%)",
                         fontsize=6)
            ax.set_xticks(_bounds(m))
            ax.set_yticks(_bounds(m))
            ax.set_xlabel("predicted class")
        axes[0][0].set_ylabel("true class")
        first = next(p[4] for p in panels if p[1] is not None)
        r, lo, hi = first["run"], first["num_old"], first["classes_seen"] - 1
        new = f"{lo}" if lo == hi else f"{lo}-{hi}"
        title = (f"{TITLE}: {r['phases']} phase{'s' if r['phases'] != 1 else ''}, seed {r['seed']}; new = the last "
                 f"phase's classes ({new})")
        suptitle(fig, titled(title, verdict_notes(figure_claims(claims, "confusion")), width=140), fontsize=7.5)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="log(1 + count)")
        return save(fig, png, pdf)


def _bounds(m: dict) -> list[int]:
    """Tick positions: the first class, the first class after the base classes, the first new class of the last
    phase, and the last class."""
    base = (m.get("config") or {}).get("base_classes") or m["num_old"]
    return sorted({0, base, m["num_old"], m["classes_seen"] - 1})

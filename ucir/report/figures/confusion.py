"""Fig. 9: confusion matrices of the last phase, entries shown as log(1 + count), overall top-1 in each title."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .common import PAGE, label, placeholder, save, style

TITLE = "Confusion matrices after the last phase, log(1 + count) (Fig. 9)"


def panels_of(metrics: dict[str, dict | None]) -> list[tuple[str, np.ndarray | None, float | None, dict | None]]:
    """(title, log(1 + C x C counts) or None, top-1 on all classes, metrics) per method and classifier, in the
    order given (the paper's: iCaRL-CNN, iCaRL-NME, Ours-CNN, Ours-NME)."""
    out = []
    for method, m in metrics.items():
        for clf in ("cnn", "nme"):
            conf = (m or {}).get(f"confusion_{clf}")
            acc = ((m or {}).get(clf) or {}).get("all")
            name = label(method, m["run"]["variant"] if m else "default", clf)
            out.append((name, np.log1p(np.asarray(conf, dtype=float)) if conf is not None else None, acc, m))
    return out


def confusion_matrices(metrics: dict[str, dict | None], png: str, pdf: str):
    """metrics: {method: that run's last-phase metrics dict, or None when it has no such run}. One shared colour
    scale; rows = true class, columns = predicted; ticks at the first class, the first class after the base classes
    and the last class."""
    panels = panels_of(metrics)
    if not any(p[1] is not None for p in panels):
        return placeholder(png, pdf, TITLE)
    vmax = max(float(p[1].max()) for p in panels if p[1] is not None)
    with style():
        fig, axes = plt.subplots(1, len(panels), figsize=(PAGE, PAGE / len(panels) + 0.5), squeeze=False,
                                 layout="constrained")
        for ax, (name, mat, acc, m) in zip(axes[0], panels):
            if mat is None:
                ax.axis("off")
                ax.set_title(name)
                ax.text(0.5, 0.5, "no such run" if m is None else "not evaluated", ha="center",
                        transform=ax.transAxes)
                continue
            im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name} ({acc:.2f}%)")
            ax.set_xticks(_bounds(m))
            ax.set_yticks(_bounds(m))
            ax.set_xlabel("predicted class")
        axes[0][0].set_ylabel("true class")
        r = next(p[3] for p in panels if p[1] is not None)["run"]
        fig.suptitle(f"{TITLE}: {r['phases']} phase{'s' if r['phases'] != 1 else ''}, seed {r['seed']}",
                     fontsize=7.5)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="log(1 + count)")
        return save(fig, png, pdf)


def _bounds(m: dict) -> list[int]:
    """Tick positions: the first class, the first class after the base classes, and the last class."""
    base = (m.get("config") or {}).get("base_classes") or m["num_old"]
    return sorted({0, base, m["classes_seen"] - 1})

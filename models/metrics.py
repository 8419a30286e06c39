"""Evaluation against known truth: ROC, SIC = TPR/√FPR, max SIC, AUC.

The max SIC is taken only where the background efficiency is statistically meaningful:
``FPR ≥ max(min_fpr, min_background / N_background)`` — by default FPR ≥ 1e-4 *and* at least 20
background events left after the cut (whichever is stricter is reported in ``"fpr_floor"`` and
``"rule"``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> y = np.r_[np.zeros(10000), np.ones(100)]; s = np.r_[rng.normal(size=10000), rng.normal(3, 1, 100)]
>>> r = sic_summary(y, s)
>>> r["max_sic"] > 5 and 0.95 < r["auc"] <= 1
True
"""

from __future__ import annotations

import numpy as np


def roc(y_true, scores, sample_weight=None):
    """(fpr, tpr, thresholds) — scikit-learn's ``roc_curve`` on finite scores."""
    from sklearn.metrics import roc_curve

    y, s = _finite(y_true, scores)
    return roc_curve(y, s, sample_weight=sample_weight, drop_intermediate=False)


def _finite(y_true, scores):
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    ok = np.isfinite(s)
    if not ok.all():
        raise ValueError(f"{(~ok).sum()} of {len(s)} scores are NaN/inf: score every evaluated event")
    if y.min() == y.max():
        raise ValueError("evaluation needs both signal (1) and background (0) labels")
    return y, s


def sic_curve(y_true, scores, min_fpr: float = 1e-4, min_background: int = 20):
    """(tpr, sic, fpr) restricted to the statistically meaningful FPR range (see module doc)."""
    fpr, tpr, _ = roc(y_true, scores)
    n_bkg = int((np.asarray(y_true) == 0).sum())
    floor = max(min_fpr, min_background / n_bkg)
    keep = fpr >= floor
    sic = tpr[keep] / np.sqrt(fpr[keep])
    return tpr[keep], sic, fpr[keep]


def sic_summary(y_true, scores, min_fpr: float = 1e-4, min_background: int = 20) -> dict:
    """``{"max_sic", "auc", "tpr_at_max", "fpr_at_max", "fpr_floor", "rule", "n_sig", "n_bkg"}``."""
    from sklearn.metrics import roc_auc_score

    y, s = _finite(y_true, scores)
    n_bkg, n_sig = int((y == 0).sum()), int((y == 1).sum())
    tpr, sic, fpr = sic_curve(y, s, min_fpr, min_background)
    i = int(np.argmax(sic)) if len(sic) else 0
    floor = max(min_fpr, min_background / n_bkg)
    rule = (f"FPR >= {min_fpr:g}" if floor == min_fpr
            else f">= {min_background} background events (FPR >= {floor:.3g})")
    return {
        "max_sic": float(sic[i]) if len(sic) else float("nan"),
        "auc": float(roc_auc_score(y, s)),
        "tpr_at_max": float(tpr[i]) if len(sic) else float("nan"),
        "fpr_at_max": float(fpr[i]) if len(sic) else float("nan"),
        "fpr_floor": float(floor),
        "rule": rule,
        "n_sig": n_sig,
        "n_bkg": n_bkg,
    }


def plot_sic(curves: dict[str, tuple], path, title: str = "") -> str:
    """SIC vs signal efficiency for several methods (``{name: (y_true, scores)}``), mplhep style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    fig, ax = plt.subplots(figsize=(8, 7))
    for name, (y, s) in curves.items():
        tpr, sic, _ = sic_curve(y, s)
        ax.plot(tpr, sic, label=name)
    ax.axhline(1.0, color="gray", ls=":", label="random")
    ax.set_xlabel("signal efficiency (TPR)")
    ax.set_ylabel(r"SIC = TPR / $\sqrt{\mathrm{FPR}}$")
    ax.set_xscale("log")
    ax.legend(fontsize=14)
    if title:
        ax.set_title(title, fontsize=16)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return str(path)

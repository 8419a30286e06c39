"""Method complementarity: score correlations, top-selection overlaps, and score combinations.

CMS EXO-22-026 found that no single anomaly-detection method is best for every signal, and that the
methods select different events. For any set of methods' scores on the same events:

* :func:`correlation_matrices` — pairwise Pearson and Spearman correlation coefficients and the
  overlap of the top-``fraction`` selections, ``|top_A ∩ top_B| / |top_A|`` (1 = same events; the
  random expectation is ``fraction``), e.g. on background-only and on signal-injected events.
* :func:`normalise` — a method-independent scale: each score's percentile within a *reference*
  sample (the unlabelled events the methods were run on), so combining needs no labels.
* :func:`combine` — ``"rank_mean"`` (average percentile), ``"rank_max"`` (the most anomalous
  percentile of any method) or ``"fisher"`` (sum of −log(1 − percentile), Fisher's p-value
  combination). The combined score is evaluated with the same SIC machinery as the methods
  (:func:`lhcad.models.metrics.sic_summary`).

>>> import numpy as np
>>> rng = np.random.default_rng(0); a = rng.normal(size=5000)
>>> r = correlation_matrices({"a": a, "b": a + 0.1 * rng.normal(size=5000), "c": rng.normal(size=5000)})
>>> r["pearson"][0][1] > 0.99 and abs(r["pearson"][0][2]) < 0.05 and r["top_overlap"][0][1] > 0.5
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

COMBINATIONS = ("rank_mean", "rank_max", "fisher")


def _stack(scores: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    names = list(scores)
    if len(names) < 2:
        raise ValueError(f"complementarity needs ≥ 2 methods, got {names}")
    S = np.column_stack([np.asarray(scores[k], dtype=np.float64) for k in names])
    bad = ~np.isfinite(S)
    if bad.any():
        cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise ValueError(f"non-finite scores from {', '.join(cols)} ({int(bad.sum())} values)")
    return names, S


def top_selection(s: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``ceil(fraction · n)`` highest scores (ties broken by order)."""
    k = max(1, int(np.ceil(fraction * len(s))))
    idx = np.argsort(-np.asarray(s), kind="stable")[:k]
    mask = np.zeros(len(s), bool)
    mask[idx] = True
    return mask


def correlation_matrices(scores: Mapping[str, np.ndarray], fraction: float = 0.01) -> dict:
    """``{"methods", "pearson", "spearman", "top_overlap", "fraction", "n"}`` (matrices as nested lists)."""
    from scipy.stats import rankdata

    names, S = _stack(scores)
    pearson = np.corrcoef(S, rowvar=False)
    R = np.column_stack([rankdata(S[:, j]) for j in range(S.shape[1])])
    spearman = np.corrcoef(R, rowvar=False)
    tops = [top_selection(S[:, j], fraction) for j in range(S.shape[1])]
    overlap = np.array([[float((a & b).sum() / a.sum()) for b in tops] for a in tops])
    return {"methods": names, "pearson": pearson.tolist(), "spearman": spearman.tolist(),
            "top_overlap": overlap.tolist(), "fraction": fraction, "n": int(len(S))}


def normalise(s, reference) -> np.ndarray:
    """Percentile of each score of ``s`` within ``reference`` (mid-rank, in (0, 1))."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if not np.isfinite(ref).all() or len(ref) == 0:
        raise ValueError("normalise: the reference scores must be finite and non-empty")
    s = np.asarray(s, dtype=np.float64)
    lo = np.searchsorted(ref, s, side="left")
    hi = np.searchsorted(ref, s, side="right")
    return (0.5 * (lo + hi) + 0.5) / (len(ref) + 1)


def combine(scores: Mapping[str, np.ndarray], how: str = "rank_mean",
            reference: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Combine several methods' scores of the same events into one (see module doc).

    ``reference`` gives, per method, the unlabelled scores that define its percentiles (default:
    ``scores`` themselves)."""
    if how not in COMBINATIONS:
        raise ValueError(f"combination {how!r} unknown (choose from {', '.join(COMBINATIONS)})")
    names, _ = _stack(scores)
    reference = reference or scores
    missing = [k for k in names if k not in reference]
    if missing:
        raise ValueError(f"combine: no reference scores for {', '.join(missing)}")
    P = np.column_stack([normalise(scores[k], reference[k]) for k in names])
    if how == "rank_mean":
        return P.mean(axis=1)
    if how == "rank_max":
        return P.max(axis=1)
    return -np.log1p(-P).sum(axis=1)


def plot_matrix(matrix, names, path, title: str = "", vmin: float = -1.0, vmax: float = 1.0) -> str:
    """A labelled heat map of a method × method matrix (mplhep style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    M = np.asarray(matrix, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.4 * len(names) + 3, 1.2 * len(names) + 2))
    im = ax.imshow(M, vmin=vmin, vmax=vmax, cmap="coolwarm")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=13)
    ax.set_yticks(range(len(names)), names, fontsize=13)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=11)
    fig.colorbar(im, ax=ax)
    if title:
        ax.set_title(title, fontsize=14)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return str(path)

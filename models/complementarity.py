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
* :func:`tail_surprise` — background-only calibration: ``−log p`` with ``p`` the tail probability
  of a score among *background* reference scores (e.g. background simulation in the signal
  region), continued beyond the reference's top events by an exponential tail fit, so that the
  most anomalous events keep their order instead of sharing the top percentile. Under the
  background, ``tail_surprise`` is ≈ Exp(1) for every method: one common, unbounded scale.
* :class:`StackedCombination` — a *data-driven* combination: a weakly supervised classifier on the
  vector of the methods' (calibrated) scores, trained CWoLa-style to separate signal-region data
  from a background sample — sideband data, or a background template. Without labels it learns
  which methods carry the excess in the data at hand, so uninformative methods do not dilute the
  best one (the fixed combinations above do). Its boosted trees are constrained to be
  non-decreasing in every method's score (a more anomalous score never lowers the combined one).
  The scores it is trained on must be out-of-sample for the methods (k-folded) and it must not score
  the events it was trained on. Against *sideband* data it is blind to signal that leaks into the
  sidebands (a broad m_jj peak): a method that also selects the sideband signal looks worse than one
  that keys on SR-only features. Against a background template (pure background, no signal) the
  CWoLa optimum is monotone in the signal/background likelihood ratio whatever the signal shape.

>>> import numpy as np
>>> rng = np.random.default_rng(0); a = rng.normal(size=5000)
>>> r = correlation_matrices({"a": a, "b": a + 0.1 * rng.normal(size=5000), "c": rng.normal(size=5000)})
>>> r["pearson"][0][1] > 0.99 and abs(r["pearson"][0][2]) < 0.05 and r["top_overlap"][0][1] > 0.5
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lhcad.models.base import Estimator

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


def tail_surprise(s, reference, n_tail: int = 50) -> np.ndarray:
    """``−log P(reference ≥ s)``: each score's tail probability among background ``reference`` scores.

    Below the ``n_tail``-th largest reference score ``u`` the tail probability is the empirical one
    (mid-rank, as :func:`normalise`); above ``u`` it is the exponential tail fitted to the top
    ``n_tail`` reference scores, ``(n_tail + ½)/(n + 1) · exp(−(s − u)/β)`` with ``β`` their mean
    excess over ``u`` (the maximum-likelihood scale). Monotone, continuous at ``u`` up to the
    mid-rank convention, and unbounded: scores beyond the reference keep their order. Beyond the
    reference the calibration is only as good as that fit (``n_tail`` = 50: within a factor ≈ 2
    three e-folds out for an exponential tail; conservative for lighter tails); the order is what a
    combination needs.

    >>> ref = np.random.default_rng(0).exponential(size=100_000)
    >>> u = tail_surprise([0.0, np.log(100.0), 20.0], ref)
    >>> bool(u[0] < 1e-3 and abs(u[1] - np.log(100.0)) < 0.05 and abs(u[2] - 20.0) < 1.0)
    True
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    n = len(ref)
    if n < 20 or not np.isfinite(ref).all():
        raise ValueError(f"tail_surprise: need ≥ 20 finite reference scores, got {n}")
    s = np.asarray(s, dtype=np.float64)
    lo = np.searchsorted(ref, s, side="left")
    hi = np.searchsorted(ref, s, side="right")
    sf = (n - 0.5 * (lo + hi) + 0.5) / (n + 1)
    k = int(min(max(n_tail, 2), n // 10))
    u = ref[n - k - 1]
    beta = ref[n - k:].mean() - u
    tail = s > u
    if beta > 0:
        sf[tail] = (k + 0.5) / (n + 1) * np.exp(-(s[tail] - u) / beta)
    return -np.log(sf)


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


class StackedCombination(Estimator):
    """Weakly supervised stacking of method scores: ``fit(P_sr, P_bkg)``; ``score_samples(P)``.

    ``P_*`` are ``(n, n_methods)`` arrays of the methods' scores on one common scale, e.g.
    percentiles (:func:`normalise`) or background tail surprises (:func:`tail_surprise`), so that
    several fold models of one method share a scale. ``P_bkg`` is sideband data or a background
    template. A boosted-tree ensemble (``n_members`` scikit-learn ``HistGradientBoostingClassifier``
    s with early stopping, balanced class weights) learns P(SR | scores); the score is the mean
    member output plus a tiny tie-break by the mean input score (the trees are piecewise constant
    and bin each input into ≤ 255 quantile bins, so the most anomalous events share the top cell:
    with surprises as inputs the tie-break orders them by Fisher's sum of surprises).

    Parameters
    ----------
    monotone : constrain the output to be non-decreasing in every input; n_members, max_iter,
    learning_rate, max_leaf_nodes, min_samples_leaf : the trees; random_state : seed.

    >>> rng = np.random.default_rng(0)
    >>> sb = rng.uniform(size=(4000, 3)); sr = rng.uniform(size=(4000, 3)); sr[:300, 1] = 0.999
    >>> st = StackedCombination(max_iter=50).fit(sr, sb)
    >>> bool(st.score_samples([[0.5, 0.999, 0.5]])[0] > st.score_samples([[0.999, 0.5, 0.999]])[0])
    True
    """

    def __init__(self, monotone: bool = True, n_members: int = 3, max_iter: int = 200,
                 learning_rate: float = 0.05, max_leaf_nodes: int = 15, min_samples_leaf: int = 100,
                 random_state: int = 0):
        self.monotone = monotone
        self.n_members = n_members
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    def fit(self, P_sr, P_bkg) -> StackedCombination:
        from sklearn.ensemble import HistGradientBoostingClassifier

        P_sr, P_sb = np.asarray(P_sr, dtype=np.float64), np.asarray(P_bkg, dtype=np.float64)
        if P_sr.ndim != 2 or P_sb.ndim != 2 or P_sr.shape[1] != P_sb.shape[1]:
            raise ValueError(f"StackedCombination.fit: need 2-D score arrays with the same number of "
                             f"methods, got {P_sr.shape} and {P_sb.shape}")
        if len(P_sr) < 100 or len(P_sb) < 100:
            raise ValueError(f"StackedCombination.fit: only {len(P_sr)} / {len(P_sb)} events (need ≥ 100 each)")
        X = np.concatenate([P_sr, P_sb])
        if not np.isfinite(X).all():
            raise ValueError("StackedCombination.fit: non-finite scores")
        y = np.r_[np.ones(len(P_sr), int), np.zeros(len(P_sb), int)]
        self.models_ = []
        for k in range(self.n_members):
            clf = HistGradientBoostingClassifier(
                max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf, class_weight="balanced", early_stopping=True,
                validation_fraction=0.25, monotonic_cst=[1] * X.shape[1] if self.monotone else None,
                random_state=self.random_state + k)
            self.models_.append(clf.fit(X, y))
        self.n_methods_ = X.shape[1]
        self.fitted_ = True
        return self

    def score_samples(self, P) -> np.ndarray:
        self._check_fitted()
        P = np.atleast_2d(np.asarray(P, dtype=np.float64))
        if P.shape[1] != self.n_methods_:
            raise ValueError(f"StackedCombination: fitted on {self.n_methods_} methods, got {P.shape[1]}")
        out = np.mean([m.predict_proba(P)[:, 1] for m in self.models_], axis=0)
        m = P.mean(axis=1)
        return out + 1e-6 * m / (1.0 + np.abs(m))         # bounded, monotone tie-break

    def _get_state(self) -> dict:
        import pickle

        return {"models": pickle.dumps(self.models_), "n_methods": self.n_methods_}

    def _set_state(self, state: dict) -> None:
        import pickle

        self.models_ = pickle.loads(state["models"])
        self.n_methods_ = int(state["n_methods"])


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

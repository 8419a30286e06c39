"""ADC2021 metrics and outputs: AUC, TPR at a fixed FPR with binomial errors, FLOPs, ROC plots,
latent-space interpretation and the black-box submission file.

TPR at FPR = f (ADC2021 uses f = 1e-5): the threshold is the (k+1)-th highest background score with
k = ⌊f · n_bkg⌋, so exactly k background events lie above it (ties excepted; the achieved FPR k/n_bkg
is reported). The TPR error is binomial, σ = √(p(1-p)/n_sig), with the Clopper–Pearson 68 % interval
alongside and the one-sided 95 % upper bound ``tpr_upper_95`` (for 0 passing events ≈ 3/n_sig); the
background side is a Poisson count of k events (relative error 1/√k), reported as ``fpr_rel_err``. With n_bkg < 1/f no threshold exists and a ValueError says how many events are needed.

FLOPs (:func:`dense_flops`) follow the ADC2021 dense count: a multiply-accumulate is 2 FLOPs, plus
one FLOP per bias and one per ReLU output; ``nonzero`` counts only the MACs of non-zero weights
(after pruning). The score (Σμ² or the MSE) is given separately.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> r = tpr_at_fpr(rng.normal(0, 1, 100_000), rng.normal(3, 1, 1000), fpr=1e-3)
>>> 0.2 < r["tpr"] < 0.35, r["n_bkg_above"]
(True, 100)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------- ROC metrics
def fpr_key(fpr: float) -> str:
    """JSON key of a TPR-at-FPR table: ``fpr_key(1e-5) == "tpr_at_fpr_1e-5"``."""
    return "tpr_at_fpr_" + f"{fpr:g}".replace("e-0", "e-").replace("e+0", "e+")


def auc(bkg_scores: np.ndarray, sig_scores: np.ndarray) -> float:
    """Area under the ROC curve (signal = positive class)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(bkg_scores)), np.ones(len(sig_scores))]
    return float(roc_auc_score(y, np.r_[bkg_scores, sig_scores]))


def tpr_at_fpr(bkg_scores: np.ndarray, sig_scores: np.ndarray, fpr: float = 1e-5) -> dict:
    """Signal efficiency at background efficiency ``fpr`` with binomial uncertainty (module doc)."""
    from scipy.stats import beta

    bkg = np.sort(np.asarray(bkg_scores, dtype=np.float64))
    sig = np.asarray(sig_scores, dtype=np.float64)
    n_b, n_s = len(bkg), len(sig)
    k = int(np.floor(fpr * n_b + 1e-9))
    if k < 1:
        raise ValueError(f"TPR at FPR={fpr:g} needs at least {int(np.ceil(1 / fpr))} background events, got {n_b}")
    if n_s == 0:
        raise ValueError("TPR needs at least one signal event")
    thr = bkg[n_b - k - 1]
    n_above = int((bkg > thr).sum())
    passed = int((sig > thr).sum())
    p = passed / n_s
    lo = float(beta.ppf(0.15865, passed, n_s - passed + 1)) if passed > 0 else 0.0
    hi = float(beta.ppf(0.84135, passed + 1, n_s - passed)) if passed < n_s else 1.0
    hi95 = float(beta.ppf(0.95, passed + 1, n_s - passed)) if passed < n_s else 1.0
    return {"tpr": p, "tpr_err": float(np.sqrt(max(p * (1 - p), 0.0) / n_s)), "tpr_lo": lo, "tpr_hi": hi,
            "tpr_upper_95": hi95,
            "fpr_target": fpr, "fpr": n_above / n_b, "fpr_rel_err": 1 / np.sqrt(max(n_above, 1)),
            "n_bkg_above": n_above, "n_bkg": n_b, "n_sig": n_s, "threshold": float(thr)}


def roc_curve(bkg_scores: np.ndarray, sig_scores: np.ndarray, n_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) sampled log-uniformly in FPR down to 1/n_bkg (for plots and JSON)."""
    bkg = np.sort(np.asarray(bkg_scores))[::-1]
    sig = np.sort(np.asarray(sig_scores))
    fprs = np.unique(np.geomspace(1.0 / len(bkg), 1.0, n_points))
    thr = bkg[np.clip((fprs * len(bkg)).astype(int) - 1, 0, len(bkg) - 1)]
    tprs = 1.0 - np.searchsorted(sig, thr, side="right") / len(sig)
    return fprs, tprs


# ------------------------------------------------------------------------------------- FLOPs
def dense_flops(layers: Sequence, nonzero: bool = False) -> int:
    """FLOPs of a dense network (list of :class:`~lhcad.models.l1_base.DenseLayer`): MAC = 2 FLOPs,
    + 1 per bias, + 1 per ReLU output; with ``nonzero`` only non-zero weights count as MACs."""
    total = 0
    for layer in layers:
        w = np.asarray(layer.weight)
        macs = int(np.count_nonzero(w)) if nonzero else int(w.size)
        n_out = w.shape[1]
        total += 2 * macs + n_out + (n_out if layer.activation == "relu" else 0)
    return total


def score_flops(kind: str, n_out: int) -> int:
    """FLOPs of the score on the network output: Σμ² = d mults + (d-1) adds; MSE = 3 per feature."""
    return 2 * n_out - 1 if kind == "mu2" else 3 * n_out


def model_flops(model) -> dict:
    """``{"flops", "flops_nonzero", "flops_with_score", "deployed"}`` for a fitted L1 estimator."""
    if hasattr(model, "dense_layers"):
        layers = model.dense_layers()
        kind = model.default_score
        f, nz = dense_flops(layers), dense_flops(layers, nonzero=True)
        return {"flops": f, "flops_nonzero": nz, "flops_with_score": f + score_flops(kind, layers[-1].weight.shape[1]),
                "deployed": "encoder to μ" if kind == "mu2" else "full autoencoder"}
    f = int(model.flops())
    return {"flops": f, "flops_nonzero": f, "flops_with_score": f, "deployed": "not deployed (graph network)"}


# ------------------------------------------------------------------------------------- plots
def _style():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.CMS)
    return plt


def plot_rocs(curves: Mapping[str, Mapping[str, tuple]], out_dir: str | Path, fpr_mark: float = 1e-5) -> list[str]:
    """One ROC figure per signal: ``curves[signal][model] = (fpr, tpr)``; returns PNG paths."""
    plt = _style()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for signal, per_model in curves.items():
        fig, ax = plt.subplots(figsize=(8, 7))
        for model, (fpr, tpr) in per_model.items():
            ax.plot(fpr, tpr, label=model)
        ax.axvline(fpr_mark, color="grey", ls="--", lw=1, label=f"FPR = {fpr_mark:g}")
        ax.set(xscale="log", xlabel="background efficiency (FPR)", ylabel="signal efficiency (TPR)",
               title=signal, ylim=(0, 1.02))
        ax.legend(fontsize=13)
        path = out_dir / f"roc_{signal}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(str(path.resolve()))
    return paths


# ------------------------------------------------------------------------------------- latent space
def latent_interpretation(latent: np.ndarray, names: np.ndarray, out_dir: str | Path, prefix: str = "vae",
                          background: str = "sm", max_events: int = 200_000) -> dict:
    """Correlation matrix of the μ components (background), ⟨μ_i⟩ and μ² per sample, PCA scree and
    the loadings of the leading components. Writes ``<prefix>_latent.png`` + ``<prefix>_latent.json``."""
    from sklearn.decomposition import PCA

    plt = _style()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latent = np.asarray(latent, dtype=np.float64)
    bkg = latent[names == background][:max_events]
    if len(bkg) < 2:
        raise ValueError(f"latent interpretation needs background ({background!r}) events")
    corr = np.corrcoef(bkg, rowvar=False)
    pca = PCA().fit(bkg)
    samples = [s for s in dict.fromkeys(names.tolist())]
    mu2 = {s: (latent[names == s] ** 2).sum(1) for s in samples}
    per_sample = {s: {"mean_mu": latent[names == s].mean(0).round(4).tolist(),
                      "mu2_median": float(np.median(v)), "mu2_p99": float(np.quantile(v, 0.99))}
                  for s, v in mu2.items()}
    # which latent direction separates each sample from the background: mean shift in σ_bkg units
    sd = bkg.std(0) + 1e-12
    shifts = {s: ((latent[names == s].mean(0) - bkg.mean(0)) / sd).round(3).tolist() for s in samples if s != background}
    result = {"correlation": np.round(corr, 4).tolist(),
              "pca_explained_variance_ratio": np.round(pca.explained_variance_ratio_, 5).tolist(),
              "pca_loadings": np.round(pca.components_[:3], 4).tolist(),
              "per_sample": per_sample, "mean_shift_in_bkg_sigma": shifts}
    fig, axes = plt.subplots(1, 3, figsize=(24, 7))
    im = axes[0].imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    fig.colorbar(im, ax=axes[0])
    axes[0].set(title="corr(μ_i, μ_j), background", xlabel="i", ylabel="j")
    hi = max(np.quantile(np.concatenate(list(mu2.values())), 0.999), 1e-6)
    bins = np.geomspace(max(hi * 1e-5, 1e-6), hi, 60)
    for s, v in mu2.items():
        axes[1].hist(np.clip(v, bins[0], None), bins=bins, histtype="step", density=True, label=s)
    axes[1].set(xscale="log", yscale="log", xlabel="μ² = Σμ_i²", ylabel="density", title="μ² per sample")
    axes[1].legend(fontsize=12)
    k = np.arange(1, len(pca.explained_variance_ratio_) + 1)
    axes[2].bar(k, pca.explained_variance_ratio_, label="explained variance")
    axes[2].plot(k, np.cumsum(pca.explained_variance_ratio_), "o-", color="k", label="cumulative")
    axes[2].set(xlabel="principal component", ylabel="fraction", title="PCA scree (background μ)")
    axes[2].legend(fontsize=12)
    png = out_dir / f"{prefix}_latent.png"
    fig.savefig(png, dpi=70, bbox_inches="tight")
    plt.close(fig)
    (out_dir / f"{prefix}_latent.json").write_text(json.dumps(result, indent=1))
    result["plot"] = str(png.resolve())
    return result


# ------------------------------------------------------------------------------------- black box
def write_blackbox_submission(path: str | Path, scores: np.ndarray, event_ids: np.ndarray,
                              performance: Mapping, n_top: int = 1000) -> Path:
    """ADC2021-style submission: ids of the ``n_top`` most anomalous black-box events (descending
    score) + their scores, and a JSON performance dict in the file attributes."""
    import h5py

    scores = np.asarray(scores)
    order = np.argsort(-scores, kind="stable")[:n_top]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("event_ids", data=np.asarray(event_ids)[order].astype(np.int64))
        f.create_dataset("scores", data=scores[order].astype(np.float32))
        f.attrs["performance"] = json.dumps(performance)
        f.attrs["n_events"] = len(scores)
    tmp.replace(path)
    return path

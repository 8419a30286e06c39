"""DQM plots (mplhep CMS style): reconstruction error vs LS per run, input vs reconstruction."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402
import numpy as np  # noqa: E402

from lhcad.dqm.data import axis_edges, axis_label  # noqa: E402


def score_vs_ls(run: int, scores: dict[str, tuple[np.ndarray, np.ndarray, float]], verdict: str,
                path: str | Path, truth_faulty: np.ndarray | None = None) -> Path:
    """Score vs LS of one run, one line per ME (``scores[me] = (lumi, score, threshold)``)."""
    plt.style.use(hep.style.CMS)
    fig, ax = plt.subplots(figsize=(11, 6))
    for i, (me, (lumi, sc, thr)) in enumerate(scores.items()):
        color = f"C{i}"
        ax.plot(lumi, sc, ".", ms=4, color=color, label=me)
        ax.axhline(thr, color=color, ls="--", lw=1)
        bad = sc >= thr
        ax.plot(lumi[bad], sc[bad], "o", mfc="none", mec=color, ms=9)
    if truth_faulty is not None and len(truth_faulty):
        for ls in truth_faulty:
            ax.axvspan(ls - 0.5, ls + 0.5, color="red", alpha=0.15, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("Lumisection")
    ax.set_ylabel(r"Reconstruction $\chi^2$ / bin")
    ax.set_title(f"Run {run}: {verdict}", fontsize=16)
    ax.legend(fontsize=12, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def input_vs_reconstruction(me: str, axes: list, shape: tuple, counts: np.ndarray, recon: np.ndarray,
                            run: int, ls: int, score: float, path: str | Path) -> Path:
    """The worst LS's histogram (with Poisson errors) against its reconstruction scaled to its entries."""
    plt.style.use(hep.style.CMS)
    fig, ax = plt.subplots(figsize=(9, 6))
    n = counts.sum()
    if len(shape) == 1 and axes:
        edges = axis_edges(axes[0], shape[0])
        finite = np.isfinite(edges)
        lo, hi = edges[finite][0], edges[finite][-1]
        edges = np.where(np.isneginf(edges), lo - (edges[finite][1] - lo), np.where(np.isposinf(edges), hi + (hi - edges[finite][-2]), edges))
        xlabel = axis_label(axes[0], me)
    else:
        edges = np.arange(len(counts) + 1) - 0.5
        xlabel = f"{me} bin (flattened {'×'.join(map(str, shape))})"
    hep.histplot(counts, edges, yerr=np.sqrt(counts), histtype="errorbar", color="k", label=f"LS {ls} ({int(n)} entries)", ax=ax)
    hep.histplot(recon * n, edges, histtype="step", color="C1", lw=2, label="AE reconstruction", ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Entries")
    ax.set_title(f"Run {run}, LS {ls}: {me}, score {score:.3g}", fontsize=16)
    ax.legend(fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

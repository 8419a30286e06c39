"""The sliding-window bump hunt.

For every SR window and every selection efficiency ε:

1. the score cut keeping the top ε of the *sideband* events is computed (:mod:`lhcad.stats.selection`);
2. the selected m_jj spectrum is binned with the SR boundaries on bin edges (:func:`window_edges`);
3. the dijet function chosen by the F-test is fitted to the sidebands only;
4. the SR excess gets a local discovery p-value from pyhf ``q0`` with the fit uncertainty as nuisance
   parameters (:mod:`lhcad.stats.discovery`).

Windows × efficiencies are independent tasks, run through :meth:`lhcad.cluster.Cluster.map` when a
cluster is given. The most significant window of each ε then gets a global significance from
pyBumpHunter pseudo-experiments (:mod:`lhcad.stats.bumphunt`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from lhcad.config import StatsConfig
from lhcad.stats.binning import histogram, mass_resolution, sr_mask, window_edges
from lhcad.stats.bumphunt import global_significance
from lhcad.stats.discovery import local_p_value, use_minuit
from lhcad.stats.ftest import choose_function
from lhcad.stats.model import gaussian_template
from lhcad.stats.selection import select, sideband_threshold

log = logging.getLogger(__name__)

ScoreSource = np.ndarray | Mapping[tuple[float, float], tuple[str, np.ndarray]] | Callable | None


@dataclass
class WindowTask:
    """Everything one window fit needs (small: histograms, not events), so it ships cheaply to workers."""

    sr: tuple[float, float]
    efficiency: float
    score_key: str
    threshold: float
    edges: np.ndarray
    counts: np.ndarray
    scan_edges: np.ndarray
    npars: tuple[int, ...] = (3, 4, 5)
    alpha: float = 0.05
    sqrt_s: float = 13000.0
    resolution: tuple[float, float] = (1.0, 0.03)


def analyse_window(task: WindowTask) -> dict:
    """Sideband fit (F-test choice) + pyhf local p-value of the SR of one window."""
    use_minuit()
    in_sr = sr_mask(task.edges, task.sr)
    choice = choose_function(task.counts, task.edges, ~in_sr, task.npars, task.alpha, task.sqrt_s)
    fit = choice.best
    centre = 0.5 * (task.sr[0] + task.sr[1])
    sigma = float(mass_resolution(centre, task.resolution))
    lo, hi = task.edges[:-1][in_sr], task.edges[1:][in_sr]
    shape = gaussian_template(np.append(lo, hi[-1]), centre, sigma)
    background = fit.expected[in_sr]
    cov = fit.expected_cov[np.ix_(in_sr, in_sr)]
    disc = local_p_value(task.counts[in_sr], background, cov, shape)
    side = ~in_sr
    pulls = fit.pulls
    # The background prediction on the global-scan bins: only inside this window's fit range (no
    # extrapolation), and a fit whose prediction is not finite there cannot be used for the scan.
    scan_bkg = np.asarray(fit.predict(task.scan_edges), dtype=float)
    inside = (task.scan_edges[:-1] >= task.edges[0]) & (task.scan_edges[1:] <= task.edges[-1])
    scan_bkg[~inside] = np.nan
    usable = bool(fit.valid and np.all(np.isfinite(fit.expected)) and np.all(np.isfinite(scan_bkg[inside])))
    return {
        "sr": [float(task.sr[0]), float(task.sr[1])],
        "fit_range": [float(task.edges[0]), float(task.edges[-1])],
        "efficiency": float(task.efficiency),
        "score_key": task.score_key,
        "threshold": float(task.threshold),
        "n_selected": float(task.counts.sum()),
        **disc,
        "npar": fit.npar,
        "fit_valid": fit.valid,
        "chi2_ndf": fit.chi2 / max(fit.ndf, 1),
        "sideband_pulls_rms": float(np.sqrt(np.mean(pulls[side] ** 2))),
        "ftest": choice.summary(),
        "spectrum": {
            "edges": task.edges.tolist(),
            "counts": task.counts.tolist(),
            "expected": fit.expected.tolist(),
            "expected_error": fit.expected_error.tolist(),
            "sr_bins": np.flatnonzero(in_sr).tolist(),
        },
        "scan_background": scan_bkg.tolist(),
        "usable": usable,
    }


def scan_binning(config: StatsConfig) -> tuple[np.ndarray, int, int]:
    """Fine bins covering all windows for the global scan: (edges, bins per window, bins per step)."""
    width, step = round(config.window_width), round(config.window_step)
    unit = math.gcd(int(width), int(step)) or 1
    lo = config.first_window
    hi = lo + (config.n_windows - 1) * config.window_step + config.window_width
    edges = np.arange(lo, hi + 0.5 * unit, unit, dtype=float)
    return edges, int(width // unit), int(step // unit)


def _window_score(scores: ScoreSource, sr: tuple[float, float], n: int) -> tuple[str, np.ndarray]:
    if scores is None:
        return "none", np.zeros(n)
    if callable(scores):
        return scores(sr)
    if isinstance(scores, Mapping):
        return scores[sr]
    return "score", np.asarray(scores)


def scored_range(mjj: np.ndarray, score: np.ndarray, fit_range: tuple[float, float]) -> tuple[float, float]:
    """The part of ``fit_range`` where events have a score (all of it with the models' default
    ``train.score_range: all``; with ``window`` they score only the SR + sidebands)."""
    finite = np.isfinite(score) & (mjj >= fit_range[0]) & (mjj < fit_range[1])
    if not finite.any():
        raise ValueError("no event in the fit range has a finite score")
    return max(fit_range[0], float(mjj[finite].min())), min(fit_range[1], float(np.nextafter(mjj[finite].max(), np.inf)))


def window_binning(sr: tuple[float, float], config: StatsConfig, fit_range: tuple[float, float]):
    """Window binning over ``fit_range``; bins shrink (down to ≥ 3 per sideband) when the scored
    sidebands are narrow, so that the sideband fit keeps enough bins."""
    side = min(sr[0] - fit_range[0], fit_range[1] - sr[1])
    sigma = float(mass_resolution(0.5 * (sr[0] + sr[1]), config.resolution))
    width = min(config.bin_width_sigma, side / (3.0 * sigma))
    return window_edges(sr, fit_range, config.resolution, width)


def build_tasks(
    mjj: np.ndarray, scores: ScoreSource, config: StatsConfig, weights: np.ndarray | None = None
) -> tuple[list[WindowTask], dict]:
    """Selections and histograms of every (window, ε); also returns each window's fit range (the
    configured one, narrowed to where the window's scores are defined) and, under ``"skipped"``, the
    windows that cannot be scanned (no scored sidebands) with the reason (logged as warnings)."""
    mjj = np.asarray(mjj, dtype=float)
    scan_edges, _, _ = scan_binning(config)
    tasks, ranges, skipped = [], {}, []
    for sr in config.windows():
        key, score = _window_score(scores, sr, mjj.size)
        if score.shape != mjj.shape:
            raise ValueError(f"score {key!r} has {score.shape[0]} values for {mjj.size} events")
        lo, hi = scored_range(mjj, score, config.fit_range)
        if not lo < sr[0] < sr[1] < hi:
            reason = f"score {key!r} is defined for m_jj {lo:.0f}-{hi:.0f} GeV only: no sidebands around SR {sr[0]:g}-{sr[1]:g}"
            log.warning("window skipped: %s", reason)
            skipped.append({"sr": [float(sr[0]), float(sr[1])], "reason": reason})
            continue
        ranges[sr] = (lo, hi)
        edges, _ = window_binning(sr, config, (lo, hi))
        for eps in config.efficiencies:
            thr = sideband_threshold(mjj, score, sr, (lo, hi), eps, weights)
            sel = select(score, thr) & np.isfinite(score)
            w = None if weights is None else weights[sel]
            tasks.append(
                WindowTask(
                    sr=sr, efficiency=eps, score_key=key, threshold=thr, edges=edges,
                    counts=histogram(mjj[sel], edges, w), scan_edges=scan_edges,
                    npars=tuple(config.functions), alpha=config.ftest_alpha, sqrt_s=config.sqrt_s,
                    resolution=tuple(config.resolution),
                )
            )
    if not tasks:
        raise ValueError("no window can be scanned: " + "; ".join(x["reason"] for x in skipped))
    ranges["skipped"] = skipped
    return tasks, ranges


def scan(
    mjj: np.ndarray,
    scores: ScoreSource,
    config: StatsConfig | None = None,
    cluster=None,
    weights: np.ndarray | None = None,
    global_toys: int | None = None,
) -> dict:
    """Run the sliding-window scan; returns a JSON-able result.

    ``scores``: one array for every window, a mapping ``{(lo, hi): (key, scores)}``, a callable
    ``(lo, hi) -> (key, scores)``, or None (no selection; use ε = 1). ``cluster`` is an open
    :class:`lhcad.cluster.Cluster` (windows run as its tasks) or None (in process).
    ``global_toys`` overrides ``config.toys`` (0 skips the global significance).
    """
    config = config or StatsConfig()
    mjj = np.asarray(mjj, dtype=float)
    tasks, ranges = build_tasks(mjj, scores, config, weights)
    skipped = ranges.pop("skipped")
    if cluster is not None:
        windows = cluster.map(analyse_window, tasks, desc="stats windows")
    else:
        from lhcad.log import progress_map

        windows = progress_map(analyse_window, tasks, "stats windows")
    npe = config.toys if global_toys is None else global_toys
    scan_edges, window_bins, step_bins = scan_binning(config)
    best, glob = {}, {}
    for eps in config.efficiencies:
        rows = [w for w in windows if w["efficiency"] == eps and w["usable"]]
        if not rows:
            log.warning("ε=%g: no window has a usable background fit (too few selected events?)", eps)
            continue
        top = min(rows, key=lambda w: w["p_value"])
        best[str(eps)] = {k: top[k] for k in ("sr", "p_value", "significance", "signal_hat", "score_key", "npar")}
        if npe > 0:
            key, score = _window_score(scores, tuple(top["sr"]), mjj.size)
            sel = select(score, top["threshold"]) & np.isfinite(score)
            data = histogram(mjj[sel], scan_edges, None if weights is None else weights[sel])
            # only scan bins where this selection is defined (scores may exist in SR + sidebands only)
            lo, hi = ranges[tuple(top["sr"])]
            inside = (scan_edges[:-1] >= lo) & (scan_edges[1:] <= hi)
            first, last = np.flatnonzero(inside)[[0, -1]]
            sub = slice(first, last + 1)
            if last - first + 1 >= window_bins:
                glob[str(eps)] = global_significance(
                    data[sub], np.asarray(top["scan_background"])[sub], scan_edges[first : last + 2], window_bins,
                    npe=npe, seed=config.seed, scan_step=step_bins,
                )
    return {
        "windows": windows,
        "best": best,
        "global": glob,
        "scan_edges": scan_edges.tolist(),
        "fit_ranges": {f"{k[0]:g}_{k[1]:g}": list(v) for k, v in ranges.items()},
        "skipped_windows": skipped,
        "trials_note": (
            "global significance per ε over the scan windows inside the best window's scored m_jj range; "
            "the choice among the ε values is a further trial"
        ),
        "config": config.model_dump(mode="json"),
    }


def summary_table(result: dict) -> list[dict]:
    """One short row per (window, ε) for printing and JSON summaries."""
    return [
        {
            "sr": f"{w['sr'][0]:.0f}-{w['sr'][1]:.0f}",
            "efficiency": w["efficiency"],
            "n_selected": w["n_selected"],
            "observed_sr": w["observed"],
            "background_sr": round(w["background"], 1),
            "background_error": round(w["background_error"], 1),
            "npar": w["npar"],
            "chi2_ndf": round(w["chi2_ndf"], 2),
            "p_value": w["p_value"],
            "significance": round(w["significance"], 2),
        }
        for w in result["windows"]
    ]

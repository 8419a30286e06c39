"""The stats stage end to end: store → scan / fit / limits → JSON + plots (used by the CLI and ``lhcad run``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from lhcad.config import ConfigError, StatsConfig
from lhcad.stats import plots
from lhcad.stats.binning import histogram, resolution_edges, sr_mask, window_edges
from lhcad.stats.ftest import choose_function
from lhcad.stats.io import StoreScores, load_dijet, load_scores, resolve_score_key
from lhcad.stats.limits import make_tasks, upper_limits
from lhcad.stats.scan import scan, summary_table
from lhcad.stats.selection import select, weighted_quantile

log = logging.getLogger(__name__)


def _write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=float))
    return path.resolve()


def _scores(data, cfg: StatsConfig) -> StoreScores | None:
    return None if cfg.score == "none" else StoreScores(data, cfg.score, cfg.score_key)


def run_scan(store: str, cfg: StatsConfig, outdir: str | Path, cluster=None) -> dict:
    """Sliding-window scan on the store's data; writes ``scan.json``, the p-value and best-window plots."""
    out = Path(outdir)
    data = load_dijet(store, cfg.dataset)
    if cfg.score == "none" and any(e < 1 for e in cfg.efficiencies):
        raise ConfigError("stats.score is 'none' (no selection): set stats.efficiencies to [1.0]")
    t0 = time.perf_counter()
    try:
        result = scan(data.mjj, _scores(data, cfg), cfg, cluster=cluster, weights=data.weight)
    except ValueError as exc:  # inputs that cannot be scanned (e.g. scores without sidebands)
        raise ConfigError(f"{store}: {exc}") from None
    result["wall_s"] = time.perf_counter() - t0
    paths = [plots.plot_p_values(result, out / "scan_pvalues.png")]
    for eps, best in result["best"].items():
        w = next(w for w in result["windows"] if w["efficiency"] == float(eps) and w["sr"] == best["sr"])
        paths.append(plots.plot_window_fit(w, out / f"scan_best_window_eps{eps}.png"))
    result["plots"] = [str(p) for p in paths]
    result["json"] = str(_write_json(out / "scan.json", result))
    return result


def _selected(data, cfg: StatsConfig, score_key: str | None, efficiency: float, sr=None):
    """Events passing a top-ε cut defined on the events outside ``sr`` (or all of the fit range)."""
    if efficiency >= 1 or score_key is None:
        return np.ones(data.mjj.size, dtype=bool), None
    key = resolve_score_key(data.store, cfg.score, sr or cfg.windows()[len(cfg.windows()) // 2], score_key)
    score = load_scores(data.store, key, data.rows)
    lo, hi = cfg.fit_range
    ref = (data.mjj >= lo) & (data.mjj < hi) & np.isfinite(score)
    if sr is not None:
        ref &= ~((data.mjj >= sr[0]) & (data.mjj < sr[1]))
    thr = weighted_quantile(score[ref], 1 - efficiency, data.weight[ref])
    return select(score, thr), key


def run_fit(
    store: str, cfg: StatsConfig, outdir: str | Path, sr: tuple[float, float] | None = None,
    score_key: str | None = None, efficiency: float = 1.0, npar: int | None = None,
) -> dict:
    """Fit the (selected) m_jj spectrum: F-test choice (or ``npar``), sideband-only when ``sr`` is given."""
    data = load_dijet(store, cfg.dataset)
    sel, key = _selected(data, cfg, score_key, efficiency, sr)
    if sr is not None:
        edges, _ = window_edges(sr, cfg.fit_range, cfg.resolution, cfg.bin_width_sigma)
        mask = ~sr_mask(edges, sr)
    else:
        edges = resolution_edges(*cfg.fit_range, cfg.resolution, cfg.bin_width_sigma)
        mask = None
    counts = histogram(data.mjj[sel], edges, data.weight[sel])
    npars = [npar] if npar else cfg.functions
    choice = choose_function(counts, edges, mask, npars, cfg.ftest_alpha, cfg.sqrt_s)
    fit = choice.best
    result = {
        "score_key": key, "efficiency": efficiency, "sr": list(sr) if sr else None,
        **choice.summary(),
        "pulls": fit.pulls.tolist(),
        "spectrum": {"edges": edges.tolist(), "counts": counts.tolist(), "expected": fit.expected.tolist(),
                     "expected_error": fit.expected_error.tolist()},
    }
    window = {"sr": list(sr) if sr else [edges[0], edges[0]], "efficiency": efficiency, "npar": fit.npar,
              "p_value": float("nan"), "significance": float("nan"), "chi2_ndf": fit.chi2 / max(fit.ndf, 1),
              "spectrum": result["spectrum"]}
    result["plots"] = [str(plots.plot_window_fit(window, Path(outdir) / "fit.png"))]
    result["json"] = str(_write_json(Path(outdir) / "fit.json", result))
    return result


def run_limits(
    store: str, cfg: StatsConfig, outdir: str | Path, cluster=None, score_key: str | None = None,
) -> dict:
    """CLs limits at ``cfg.limit_masses`` on the (optionally top-ε selected) spectrum; Brazil plot(s)."""
    data = load_dijet(store, cfg.dataset)
    sel, key = _selected(data, cfg, score_key, cfg.limit_efficiency)
    edges = resolution_edges(*cfg.fit_range, cfg.resolution, cfg.bin_width_sigma)
    counts = histogram(data.mjj[sel], edges, data.weight[sel])
    fit = choose_function(counts, edges, None, cfg.functions, cfg.ftest_alpha, cfg.sqrt_s).best
    per_unit = cfg.luminosity * cfg.signal_efficiency if cfg.luminosity else 1.0
    unit = "fb" if cfg.luminosity else "signal events"
    try:
        tasks = make_tasks(counts, edges, fit.expected, fit.expected_cov, cfg.limit_masses, cfg.resolution,
                           events_per_unit=per_unit, toys=cfg.limit_toys, seed=cfg.seed)
    except ValueError as exc:
        raise ConfigError(f"stats.limit_masses: {exc}") from None
    t0 = time.perf_counter()
    limits = upper_limits(tasks, cluster)
    result = {"unit": unit, "score_key": key, "efficiency": cfg.limit_efficiency, "fit_npar": fit.npar,
              "limits": limits, "wall_s": time.perf_counter() - t0}
    paths = [plots.plot_brazil(limits, Path(outdir) / "limits_brazil.png", unit)]
    if cfg.limit_toys > 0:
        paths.append(plots.plot_brazil(limits, Path(outdir) / "limits_brazil_toys.png", unit, toys=True))
    result["plots"] = [str(p) for p in paths]
    result["json"] = str(_write_json(Path(outdir) / "limits.json", result))
    return result


def pipeline_stage(cfg, ctx) -> dict:
    """``lhcad run`` stage: scan + limits on ``cfg.store``; artefacts under ``<workdir>/stats``."""
    from lhcad.cluster import open_cluster

    out = ctx.workdir / "stats"
    with open_cluster(cfg.cluster) as cluster:
        res = run_scan(cfg.store, cfg.stats, out, cluster)
        lim = run_limits(cfg.store, cfg.stats, out, cluster)
    figures = {"scan_wall_s": round(res["wall_s"], 2)}
    for eps, best in res["best"].items():
        figures[f"best_window_eps{eps}"] = f"{best['sr'][0]:.0f}-{best['sr'][1]:.0f}"
        figures[f"local_significance_eps{eps}"] = round(best["significance"], 2)
        w = next(w for w in res["windows"] if w["efficiency"] == float(eps) and w["sr"] == best["sr"])
        figures[f"best_window_chi2_ndf_eps{eps}"] = round(w["chi2_ndf"], 2)
        figures[f"best_window_fit_range_eps{eps}"] = f"{w['fit_range'][0]:.0f}-{w['fit_range'][1]:.0f}"
        if eps in res["global"]:
            g = res["global"][eps]
            figures[f"global_significance_eps{eps}"] = round(g["significance"], 2)
            figures[f"global_capped_eps{eps}"] = g["capped"]
    figures["global_npe"] = cfg.stats.toys
    for row in lim["limits"]:
        figures[f"limit_obs_m{row['mass']:.0f}"] = round(row["observed"], 2)
        figures[f"limit_exp_m{row['mass']:.0f}"] = round(row["expected"]["median"], 2)
    figures["limit_unit"] = lim["unit"]
    return {"figures": figures, "plots": res["plots"] + lim["plots"],
            "artefacts": {"scan": res["json"], "limits": lim["json"]}}


__all__ = ["pipeline_stage", "run_fit", "run_limits", "run_scan", "summary_table"]

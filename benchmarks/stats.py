"""Benchmark of the stats stage: a full sliding-window scan + limits, and the calibration figures.

Measured in one run on the given machine (the figures depend on its load):

* ``scan_wall_s``: 9 windows × 3 selection efficiencies (sideband fits with F-test, pyhf q0 p-values,
  pyBumpHunter global significance) + observed/expected CLs limits at 6 masses, on 40+-bin spectra,
  run as tasks on a local Dask cluster (``--workers``); ``scan_s`` and ``limits_s`` separately.
* ``p_value_ks``: KS-test p-value of background-only local p-values against U(0, 1).
* ``cls_coverage``: fraction of toys whose 95 % CLs upper limit covers the true signal (median
  expected limit injected).
* fit pulls (mean/width) on 4-parameter toys and the F-test's 4-parameter choice fraction.

    python benchmarks/stats.py --json stats.json          # full (≥ 200 toys each)
    python benchmarks/stats.py --quick                    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="small smoke run (fewer events and toys)")
    ap.add_argument("--workers", type=int, default=2, help="Dask workers for the scan and the toys")
    ap.add_argument("--toys", type=int, default=None, help="toys per calibration study (default 200, quick 30)")
    args = ap.parse_args(argv)

    from lhcad.cluster import open_cluster
    from lhcad.config import ClusterConfig, StatsConfig
    from lhcad.stats.binning import mass_resolution, resolution_edges
    from lhcad.stats.calibration import (
        cls_coverage, controlled_scores, fit_pulls, null_p_values, sample_mjj, signal_for_significance,
    )
    from lhcad.stats.ftest import choose_function
    from lhcad.stats.limits import make_tasks, upper_limits
    from lhcad.stats.scan import scan

    toys = args.toys or (30 if args.quick else 200)
    truth = [1.0, 12.0, 4.0, 0.6]
    fit_range = (1800.0, 7000.0)
    rng = np.random.default_rng(2026)
    n_bkg = 100_000 if args.quick else 1_000_000
    mjj_b = sample_mjj(truth, n_bkg, fit_range, rng)
    # W'(3.5 TeV) sized for ≈ 5σ expected after a top-1 % selection with ε_sig = 40 % (truth-informed score)
    sigma = float(mass_resolution(3500.0))
    b_sr = 0.01 * np.count_nonzero((mjj_b >= 3300) & (mjj_b < 3700))
    n_sig = int(round(signal_for_significance(5.0, b_sr) / (0.4 * 0.9)))
    score_b, score_s = controlled_scores(n_bkg, n_sig, 0.01, 0.4, rng)
    mjj = np.concatenate([mjj_b, rng.normal(3500.0, sigma, n_sig)])
    score = np.concatenate([score_b, score_s])
    # bins of 0.9 × the m_jj resolution: 44 bins over 1.8-7 TeV
    cfg = StatsConfig(toys=200 if args.quick else 1000, bin_width_sigma=0.9)
    edges = resolution_edges(*fit_range, cfg.resolution, cfg.bin_width_sigma)
    out: dict = {"machine_cpus": len(os.sched_getaffinity(0)), "load_avg_1min": os.getloadavg()[0],
                 "workers": args.workers, "events": int(mjj.size), "injected_signal": n_sig,
                 "n_bins": int(len(edges) - 1), "windows": cfg.n_windows, "efficiencies": cfg.efficiencies}

    t0 = time.perf_counter()
    with open_cluster(ClusterConfig(type="dask-local", workers=args.workers)) as cluster:
        out["cluster_start_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = scan(mjj, score, cfg, cluster=cluster)
        out["scan_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        counts = np.histogram(mjj, edges)[0].astype(float)
        fit = choose_function(counts, edges).best
        masses = [2500.0, 3000.0, 3500.0, 4000.0, 4500.0, 5000.0]
        lims = upper_limits(make_tasks(counts, edges, fit.expected, fit.expected_cov, masses), cluster)
        out["limits_s"] = time.perf_counter() - t2
        out["scan_wall_s"] = out["scan_s"] + out["limits_s"]
        best = res["best"]["0.01"]
        out["injection_best_window"] = best["sr"]
        out["injection_best_contains_3500"] = bool(best["sr"][0] <= 3500 <= best["sr"][1])
        out["injection_local_significance"] = best["significance"]
        out["injection_global"] = {k: res["global"]["0.01"][k] for k in ("significance", "capped", "npe", "significance_cap")}
        out["limit_expected_median_m3500"] = next(r["expected"]["median"] for r in lims if r["mass"] == 3500.0)
        out["limit_observed_m3500"] = next(r["observed"] for r in lims if r["mass"] == 3500.0)

        t3 = time.perf_counter()
        null = null_p_values([2e4, *truth[1:]], (3300.0, 3700.0), fit_range, toys, seed=1, cluster=cluster)
        out["p_value_ks"] = null["ks_p_value"]
        out["p_value_fraction_below_0.05"] = null["fraction_below_0.05"]
        cov = cls_coverage(np.array([50.0]), np.array([[16.0]]), np.array([1.0]), None, toys, seed=2, cluster=cluster)
        out["cls_coverage"] = cov["coverage"]
        out["cls_coverage_mu_true"] = cov["mu_true"]
        out["cls_coverage_binomial_error"] = cov["binomial_error"]
        out["calibration_toys"] = toys
        out["calibration_s"] = time.perf_counter() - t3
    pulls = fit_pulls([3e5, *truth[1:]], edges, toys, seed=3, n_choice=min(toys, 100))
    out["pull_mean"] = pulls["pull_mean"]
    out["pull_std"] = pulls["pull_std"]
    out["ftest_4par_fraction"] = pulls["choice_fractions"]["4"]

    for k, v in out.items():
        print(f"{k:36s} {v if not isinstance(v, float) else round(v, 4)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=float))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

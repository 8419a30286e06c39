"""Weakly supervised resonant AD on an LHCO-like dijet set: max SIC and AUC of every method.

Data, in order of preference:

* ``--store S.zarr`` — a prepared store (``dijet/`` with datasets ``data``, ``extra_bkg``, ``test``);
* ``--lhco DIR`` — LHC Olympics R&D feature files imported with :func:`lhcad.importers.import_lhco`
  (``*extra*`` → ``extra_bkg``, ``*test*`` → ``test``, every other ``*.h5`` → ``data``);
* otherwise the real chain: ``lhcad generate dijet`` (QCD + W'(3.5 TeV) → X(500) Y(100) at
  ``--s-over-b`` in the SR, ``--extra-background``, ``--test-events``) → ``lhcad process dijet``.

Then supervised, IAD, CWoLa, ANODE, CATHODE and R-ANODE run as Dask tasks (k folds × ensemble
members) on a local cluster, are scored into the store and evaluated on the labelled SR test events.
``--scan`` repeats CATHODE and R-ANODE at further S/B values (regenerated data); ``--null`` repeats
CATHODE with no injected signal (background closure: data-vs-template AUC ≈ 0.5).

    python benchmarks/dijet_ad.py --quick --json q.json       # smoke run (small, few epochs)
    python benchmarks/dijet_ad.py --events 1000000 --json full.json
    python benchmarks/dijet_ad.py --store prepared.zarr --methods cwola,cathode

JSON keys: ``max_sic`` and ``auc`` ({method: value}), ``s_over_b`` (measured in the SR of
``data``), ``signal_fraction`` (R-ANODE's fitted w, mean over folds, + per fold) and
``signal_fraction_true`` (S / (S + B) in the SR data), ``wall_s`` ({method: train + score seconds; ``background_flow``: the shared sideband
flows}), ``rule`` (max-SIC rule: ≥ 20 background test events left, nothing else), ``sic_cap``
(1/√FPR floor: the largest max SIC the rule allows), ``tpr_at_max`` (signal efficiency at the max:
near 1 means the method sits at the cap and is not ranked), ``max_sic_fpr_1e-4`` (the max SIC at
FPR ≥ 1e-4, cap 100), ``n_test``, ``template_auc`` (+ per fold), ``scan`` (list of {s_over_b,
max_sic, ...}), ``null_test``, ``goals`` (issue acceptance checks), ``settings``, ``load_average``.

The labelled test set is large (800 k background events in the SR) because the W' → XY signal is almost
perfectly separable with these features: with 80 k test background events every method reached TPR
0.95-0.99 at the FPR floor 2.5e-4 (max SIC 60-63 against a cap of 63.2) and even the single most
background-like-signal cut at FPR 1.25e-5 kept TPR 0.86-0.97.

Ensembles. The deep tail (FPR 2.5e-5 = 20 of 800 k background events) of a single HGB per fold is
noisy: 5 single-member runs of CWoLa gave max SIC 69-123 (IAD 164-180, CATHODE 157-171). The
classifier methods therefore train ``--ensemble`` members per fold (own seeds: the early-stopping
split, and for CATHODE a fresh template) and average their probabilities. Measured on the 1 M store
(S/B 0.58 %), 1 → 5 members: CWoLa 87.8 → 160.6 (FPR >= 1e-4: 62.9 → 85.3), IAD 167.8 → 178.2
(92.5 → 93.4), CATHODE 157.4 → 173.5 (76.0 → 88.6). The size 5 was fixed a priori (cost), not tuned
on the test set; averaging log-odds instead of probabilities changes the max SICs by <= 1.5.

Background flows (null closure). Measured on the 1 M-event null store (CATHODE 5-fold template AUC,
held-out SR data vs a fresh template): one NSF on 60 k events drawn from the whole m_jj range outside
the SR (only 7 % of them within 400 GeV of the SR) gave 0.521; the same flow is off by as much in
held-out *sideband* data next to the SR (2-fold AUC 0.513 at 2.9-3.3 and 3.7-4.1 TeV, as in the SR:
0.513), and sampling m from the true SR masses instead of the KDE changes nothing (0.511) — flow
fidelity, not the interpolation or the mass sampling. One NSF on all 153 k events within 1 TeV of the
SR: 0.509; an equal mixture of 3 independently trained flows: 0.506. Defaults: sidebands 1 TeV each
side of the SR, 3 flows of 60 k events each (CATHODE samples their mixture; ANODE / R-ANODE use one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SR = (3300.0, 3700.0)
ALL = ["supervised", "iad", "cwola", "anode", "cathode", "ranode"]


def _lhcad(*args: str) -> None:
    """Run one lhcad command in a subprocess (the real CLI), failing loudly."""
    cmd = [sys.executable, "-m", "lhcad.cli", "-q", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")


def generate_store(workdir: Path, events: int, s_over_b: float, extra: int, test: int, seed: int,
                   workers: int) -> tuple[str, dict]:
    """generate → process; returns (store path, timings). Reuses ``<workdir>/gen_sb<S/B>_t<test>`` and
    ``store_sb<S/B>_t<test>.zarr`` when they exist."""
    gen = workdir / f"gen_sb{s_over_b:g}_t{test}"
    store = workdir / f"store_sb{s_over_b:g}_t{test}.zarr"
    t0 = time.perf_counter()
    if not (gen / "fileset.json").exists():
        args = ["generate", "dijet", "--events", str(events), "--out", str(gen), "--seed", str(seed),
                "--extra-background", str(extra), "--test-events", str(test)]
        args += ["--s-over-b", str(s_over_b)] if s_over_b > 0 else ["--signal-events", "0"]
        _lhcad(*args)
    t1 = time.perf_counter()
    if not (store / "dijet").exists():
        _lhcad("process", "dijet", "--fileset", str(gen / "fileset.json"), "--out", str(store),
               "--executor", "futures", "--workers", str(workers))
    return str(store), {"generate_s": t1 - t0, "process_s": time.perf_counter() - t1}


def import_lhco_store(directory: Path, workdir: Path) -> str:
    from lhcad.importers import import_lhco

    store = workdir / "lhco.zarr"
    files = sorted(Path(directory).glob("*.h5"))
    if not files:
        raise SystemExit(f"{directory}: no *.h5 LHCO feature files")
    groups: dict[str, list[Path]] = {}
    for f in files:
        name = "extra_bkg" if "extra" in f.name else "test" if "test" in f.name else "data"
        groups.setdefault(name, []).append(f)
    for name, paths in groups.items():
        import_lhco(paths, str(store), dataset=name)
    return str(store)


def measured_s_over_b(store: str) -> float:
    import numpy as np

    from lhcad.models.data import load_dijet

    d = load_dijet(store)
    rows = d.rows("data") & (d.m >= SR[0]) & (d.m < SR[1])
    s, b = int((d.truth[rows] > 0).sum()), int((d.truth[rows] == 0).sum())
    return float(s / b) if b else float(np.nan)


def evaluate(store: str, key: str) -> dict:
    """Max SIC of the stored scores ``key`` on the labelled SR test events under the rule
    "≥ 20 background events left" alone (the test set is large enough that the rule's FPR floor sits
    below 1e-4), plus the max SIC at FPR ≥ 1e-4 and the cap 1/√floor of the rule."""
    import numpy as np

    from lhcad import store as _store
    from lhcad.models import jobs
    from lhcad.models.data import load_dijet
    from lhcad.models.metrics import sic_summary

    d = load_dijet(store)
    rows, name = jobs.evaluation_rows(d, SR)
    y, s = d.truth[rows] > 0, _store.read_scores(store, "dijet", key)[rows]
    r = sic_summary(y, s, min_fpr=0.0, min_background=20)
    r["sic_cap"] = r["fpr_floor"] ** -0.5
    r["max_sic_fpr_1e-4"] = sic_summary(y, s, min_fpr=1e-4, min_background=20)["max_sic"]
    r["evaluated_on"] = name
    return {k: float(v) if isinstance(v, (np.floating, np.integer)) else v for k, v in r.items()}


def run_methods(store: str, methods: list[str], settings: dict, artefacts: Path, workers: int) -> dict:
    """Train + score ``methods``; per-method wall time, metrics."""
    from lhcad.cluster import open_cluster
    from lhcad.config import ClusterConfig, TrainConfig
    from lhcad.models import jobs

    settings = dict(settings)
    ens_methods = settings.pop("ensemble_methods", None)
    cfg = TrainConfig(methods=methods, sr=SR, **settings)
    spec = jobs.make_spec(store, cfg, artefacts)
    out: dict = {"wall_s": {}, "results": {}}
    with open_cluster(ClusterConfig(type="dask-local", workers=workers, threads_per_worker=1)) as cl:
        if any(m in jobs.FLOW_METHODS for m in methods):
            t0 = time.perf_counter()
            tasks = [{"spec": spec, "sr": SR, "member": k} for k in range(cfg.n_flows)]
            cl.map(jobs.train_flow_task, tasks, retries=cfg.retries, desc="background flow")
            out["wall_s"]["background_flow"] = time.perf_counter() - t0
        for method in methods:
            t0 = time.perf_counter()
            # ensemble members per fold: cfg.ensemble for the ensembled methods, 1 for the others
            # (artefact fingerprints do not include the ensemble size: member k is reused across sizes)
            ens = cfg.ensemble if ens_methods is None or method in ens_methods else 1
            mspec = {**spec, "cfg": {**spec["cfg"], "ensemble": ens}}
            jobs.train(cl, mspec, [method])
            res = jobs.score(cl, mspec, [method])
            out["wall_s"][method] = time.perf_counter() - t0
            out["results"][method] = {**res[jobs.score_key(method, SR)], **evaluate(store, jobs.score_key(method, SR))}
            r = out["results"][method]
            print(f"  {method:10s} max SIC {r.get('max_sic', float('nan')):7.2f}  AUC {r.get('auc', float('nan')):.3f}"
                  f"  {out['wall_s'][method]:7.1f} s" + (f"  template AUC {r['template_auc']:.3f}"
                                                         if "template_auc" in r else ""), flush=True)
    return out


def acceptance(ms: dict, low: list[dict], null: dict | None, scan_methods: list[str]) -> dict:
    """The issue's goals from max SICs ``ms``, the scan points at S/B <= 0.3 % (``low``) and the null test."""
    goals = {}
    if "iad" in ms:
        goals["iad >= 10"] = ms["iad"] >= 10
        for m, f in (("cathode", 0.9), ("cwola", 0.65)):
            if m in ms:
                goals[f"{m} >= {f} x iad"] = ms[m] >= f * ms["iad"]
        if "supervised" in ms:
            goals["supervised >= iad"] = ms["supervised"] >= ms["iad"]
    if null:
        goals["null template AUC 0.5 +- 0.02"] = null["closure_ok"]
    if low and len(scan_methods) == 2:
        goals["ranode >= cathode at S/B <= 0.3 %"] = all(x["ranode"] >= x["cathode"] for x in low)
    return goals


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (200 k events, few epochs)")
    p.add_argument("--store", help="use this prepared Zarr store")
    p.add_argument("--lhco", type=Path, help="import LHCO R&D *.h5 feature files from this folder")
    p.add_argument("--events", type=int, default=1_000_000, help="QCD events to generate (default 1 M)")
    p.add_argument("--s-over-b", type=float, default=0.006, help="injected S/B in the SR (default 0.6 %%)")
    p.add_argument("--extra-background", type=int, default=200_000, help="SR-only QCD events for IAD")
    p.add_argument("--test-events", type=int, default=1_000_000,
                   help="labelled SR test events, 80 %% QCD (default 1 M: 800 k background, so the "
                        ">= 20-events rule allows FPR down to 2.5e-5, SIC cap 200)")
    p.add_argument("--null-test-events", type=int, default=100_000,
                   help="labelled SR test events of the --null store (its max SIC only has to stay ~1)")
    p.add_argument("--scan", default="0.003",
                   help="further S/B points for CATHODE vs R-ANODE ('' = none; e.g. 0.003,0.0015 adds a "
                        "harder point below the one the issue asks for)")
    p.add_argument("--null", action="store_true", help="also run the zero-signal closure test")
    p.add_argument("--methods", default=",".join(ALL), help="comma-separated methods")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--ensemble", type=int, default=5,
                   help="ensemble members per fold of the --ensemble-methods (scores: mean probability)")
    p.add_argument("--ensemble-methods", default="supervised,iad,cwola,cathode",
                   help="methods trained as --ensemble members per fold (the others: 1 member)")
    p.add_argument("--classifier", default="hgb", choices=["hgb", "mlp"])
    p.add_argument("--flow", default="nsf", choices=["maf", "nsf"], help="background flow (default nsf)")
    p.add_argument("--flow-epochs", type=int, default=12)
    p.add_argument("--flow-max-events", type=int, default=60_000,
                   help="sideband events per background flow (defaults: the measured null-closure setting)")
    p.add_argument("--flow-sb-width", type=float, default=1000.0,
                   help="background-flow sidebands: this many GeV each side of the SR (0: all of m_jj)")
    p.add_argument("--n-flows", type=int, default=3,
                   help="background flows (CATHODE samples its template from their equal mixture)")
    p.add_argument("--ranode-epochs", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="local Dask workers (1 thread each)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, help="keep generated data / stores / artefacts here")
    p.add_argument("--json", type=Path, help="write the figures to this JSON file")
    a = p.parse_args(argv)
    if a.quick:
        a.events, a.extra_background, a.test_events, a.null_test_events = 200_000, 40_000, 20_000, 20_000
        a.folds, a.ensemble, a.flow_epochs, a.ranode_epochs, a.flow_max_events, a.n_flows = 3, 1, 4, 4, 40_000, 2
        a.s_over_b = max(a.s_over_b, 0.02)
        a.scan = ""
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = sorted(set(methods) - set(ALL))
    if bad:
        p.error(f"--methods: unknown {', '.join(bad)} (choose from {', '.join(ALL)})")

    from lhcad import log

    log.setup(quiet=True)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="lhcad-bench-ad-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {"folds": a.folds, "ensemble": a.ensemble, "classifier": a.classifier, "flow": a.flow,
                "flow_epochs": a.flow_epochs, "flow_max_events": a.flow_max_events,
                "flow_sb_width": a.flow_sb_width or None, "n_flows": a.n_flows,
                "ranode_epochs": a.ranode_epochs, "seed": a.seed, "device": "auto",
                "ensemble_methods": [m.strip() for m in a.ensemble_methods.split(",") if m.strip()],
                "score_range": "window"}     # only the SR test events are evaluated
    timings: dict = {}
    if a.store:
        store = a.store
    elif a.lhco:
        store = import_lhco_store(a.lhco, workdir)
    else:
        store, timings = generate_store(workdir, a.events, a.s_over_b, a.extra_background, a.test_events,
                                        a.seed, a.workers)
    sb = measured_s_over_b(store)
    print(f"store {store}: S/B in SR {100 * sb:.3f} %", flush=True)
    main_run = run_methods(store, methods, settings, workdir / "artefacts", a.workers)
    res = main_run["results"]
    out: dict = {
        "max_sic": {m: res[m].get("max_sic") for m in methods},
        "auc": {m: res[m].get("auc") for m in methods},
        "tpr_at_max": {m: res[m].get("tpr_at_max") for m in methods},
        "max_sic_fpr_1e-4": {m: res[m].get("max_sic_fpr_1e-4") for m in methods},
        "s_over_b": sb,
        "wall_s": main_run["wall_s"],
        "rule": next((r["rule"] for r in res.values() if "rule" in r), None),
        # the largest max SIC the rule allows (TPR = 1 at the FPR floor): methods there are not ranked
        "sic_cap": next((r["sic_cap"] for r in res.values() if r.get("sic_cap")), None),
        "n_test": next(({"signal": r["n_sig"], "background": r["n_bkg"]} for r in res.values() if "n_sig" in r), None),
        "template_auc": res.get("cathode", {}).get("template_auc"),
        "template_auc_folds": res.get("cathode", {}).get("template_auc_folds"),
        "signal_fraction": res.get("ranode", {}).get("signal_fraction"),
        "signal_fraction_folds": res.get("ranode", {}).get("signal_fraction_folds"),
        "signal_fraction_true": sb / (1 + sb),
        "data_timings_s": timings,
        "settings": {**settings, "events": a.events, "injected_s_over_b": a.s_over_b,
                     "extra_background": a.extra_background, "test_events": a.test_events,
                     "workers": a.workers, "store": store},
        "scan": [],
    }
    def dump() -> None:       # after every phase, so a long run leaves its figures behind
        if a.json:
            a.json.write_text(json.dumps({**out, "load_average": os.getloadavg()}, indent=2, default=float))

    dump()
    scan_methods = [m for m in ("cathode", "ranode") if m in methods]
    if not a.store and not a.lhco:
        for point in [float(x) for x in a.scan.split(",") if x.strip()]:
            print(f"scan S/B = {100 * point:.2f} %", flush=True)
            st, _ = generate_store(workdir, a.events, point, a.extra_background, a.test_events, a.seed, a.workers)
            r = run_methods(st, scan_methods, settings, workdir / "artefacts", a.workers)["results"]
            out["scan"].append({"injected_s_over_b": point, "s_over_b": measured_s_over_b(st),
                                "max_sic": {m: r[m].get("max_sic") for m in scan_methods},
                                "max_sic_fpr_1e-4": {m: r[m].get("max_sic_fpr_1e-4") for m in scan_methods},
                                "auc": {m: r[m].get("auc") for m in scan_methods},
                                "tpr_at_max": {m: r[m].get("tpr_at_max") for m in scan_methods},
                                "template_auc": r.get("cathode", {}).get("template_auc"),
                                "signal_fraction": r.get("ranode", {}).get("signal_fraction"),
                                "signal_fraction_true": measured_s_over_b(st) / (1 + measured_s_over_b(st))})
            dump()
        if a.null and "cathode" in methods:
            print("null test (no injected signal)", flush=True)
            st, _ = generate_store(workdir, a.events, 0.0, a.extra_background, a.null_test_events, a.seed,
                                   a.workers)
            nr = run_methods(st, ["cathode"], settings, workdir / "artefacts", a.workers)
            r = nr["results"]["cathode"]
            out["null_test"] = {"template_auc": r.get("template_auc"), "template_auc_folds": r.get("template_auc_folds"),
                                "max_sic": r.get("max_sic"), "auc": r.get("auc"), "wall_s": nr["wall_s"],
                                "closure_ok": abs(r.get("template_auc", 1.0) - 0.5) <= 0.02}
    out["goals"] = acceptance(out["max_sic"], [p["max_sic"] for p in out["scan"] if p["injected_s_over_b"] <= 0.003],
                              out.get("null_test"), scan_methods)
    # the same checks with the max SIC at FPR >= 1e-4 (cap 100; the issue allows either rule)
    out["goals_fpr_1e-4"] = acceptance(out["max_sic_fpr_1e-4"],
                                       [p["max_sic_fpr_1e-4"] for p in out["scan"] if p["injected_s_over_b"] <= 0.003],
                                       out.get("null_test"), scan_methods)
    out["load_average"] = os.getloadavg()
    print(json.dumps({k: out[k] for k in ("max_sic", "max_sic_fpr_1e-4", "auc", "s_over_b", "wall_s", "goals",
                                          "goals_fpr_1e-4")}, indent=1, default=float))
    dump()
    return out


if __name__ == "__main__":
    main()

"""LHCO round trip: the same generated events through NanoAOD → processor and LHCO h5 → importer.

One generated sample (one seed) is written twice by ``lhcad generate dijet --lhco-h5``: as NanoAOD
(+ fileset) and as LHC Olympics R&D feature tables (pandas HDF5, one per dataset). Then

1. ``lhcad process dijet`` (coffea processor, futures executor) → ``processed.zarr``;
2. ``lhcad import lhco FILE --dataset NAME --preselect`` per dataset, in fileset order → ``imported.zarr``
   (``--preselect``: the processor's cuts; the LHCO files hold every generated event);
3. :func:`lhcad.importers.compare.compare_dijet_stores` joins the two tables on (dataset, event)
   and compares every column both can fill (float32 units);
4. CATHODE (the real training jobs: :func:`lhcad.models.jobs.train` / :func:`~lhcad.models.jobs.score`
   on a local Dask cluster) is trained and scored on both stores with the same seed, and on the
   processed store with ``--noise-seeds`` further seeds, whose max-SIC spread is the training noise
   the two paths' difference is judged against.

The one expected difference: where one of the two leading jets fails pT/η, the processor pairs the
other with a third jet, which the two-jet LHCO format does not hold (1 event in 153 411 at the
default size, seed 1). The rows then no longer line up, the fold split differs, and the two max SIC
differ by training noise; without such events they are identical.

    python benchmarks/lhco_roundtrip.py --quick --json q.json     # smoke run
    python benchmarks/lhco_roundtrip.py --json roundtrip.json     # 200 k events, 3 folds, 4 CATHODE runs

JSON keys: ``compare`` (rows, matched, only_reference, only_other, aligned, features_equal, equal, max_ulps per
column, not_in_other), ``cutflow`` ({processed, imported}), ``max_sic`` / ``auc`` /
``template_auc`` ({processed, imported}), ``noise`` ({seeds, max_sic, std}), ``delta_max_sic``,
``within_noise``, ``s_over_b`` (measured in the SR of ``data``), ``wall_s`` (per step), ``settings``,
``load_average``.
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
KEY = "cathode__3300_3700"


def _lhcad(*args: str) -> str:
    """Run one lhcad command in a subprocess (the real CLI), failing loudly; returns stdout."""
    cmd = [sys.executable, "-m", "lhcad.cli", "-q", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


def build_stores(workdir: Path, events: int, s_over_b: float, test: int, seed: int, workers: int) -> dict:
    """generate (NanoAOD + LHCO h5) → process → import; returns paths and wall times."""
    gen, h5 = workdir / "gen", workdir / "lhco" / "events_anomalydetection.h5"
    processed, imported = workdir / "processed.zarr", workdir / "imported.zarr"
    wall = {}
    t0 = time.perf_counter()
    if not (gen / "fileset.json").exists():
        h5.parent.mkdir(parents=True, exist_ok=True)
        _lhcad("generate", "dijet", "--events", str(events), "--s-over-b", str(s_over_b), "--test-events", str(test),
               "--seed", str(seed), "--out", str(gen), "--lhco-h5", str(h5))
    wall["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (processed / "dijet").exists():
        _lhcad("process", "dijet", "--fileset", str(gen / "fileset.json"), "--out", str(processed),
               "--executor", "futures", "--workers", str(workers))
    wall["process"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (imported / "dijet").exists():
        truth = json.loads((gen / "truth.json").read_text())
        for name in json.loads((gen / "fileset.json").read_text()):  # fileset order = processor row order
            path = h5 if name == "data" else h5.with_name(f"{h5.stem}_{name}.h5")
            if name not in truth["datasets"]:
                continue
            _lhcad("import", "lhco", str(path), "--out", str(imported), "--dataset", name, "--preselect")
    wall["import"] = time.perf_counter() - t0
    return {"processed": str(processed), "imported": str(imported), "wall_s": wall}


def cathode(store: str, settings: dict, seed: int, artefacts: Path, workers: int) -> dict:
    """Train + score CATHODE on ``store`` with the real jobs; the score summary of the SR window."""
    from lhcad.cluster import open_cluster
    from lhcad.config import ClusterConfig, TrainConfig
    from lhcad.models import jobs

    cfg = TrainConfig(methods=["cathode"], sr=SR, seed=seed, **settings)
    spec = jobs.make_spec(store, cfg, artefacts)
    t0 = time.perf_counter()
    with open_cluster(ClusterConfig(type="dask-local", workers=workers, threads_per_worker=1)) as cl:
        jobs.train(cl, spec, ["cathode"])
        res = jobs.score(cl, spec, ["cathode"])[KEY]
    res["wall_s"] = time.perf_counter() - t0
    return res


def measured_s_over_b(store: str) -> float:
    from lhcad.models.data import load_dijet

    d = load_dijet(store)
    rows = d.rows("data") & (d.m >= SR[0]) & (d.m < SR[1])
    s, b = int((d.truth[rows] > 0).sum()), int((d.truth[rows] == 0).sum())
    return s / b if b else float("nan")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (60 k events, few epochs)")
    p.add_argument("--events", type=int, default=200_000, help="QCD events to generate (default 200 k)")
    p.add_argument("--s-over-b", type=float, default=0.05, help="injected S/B in the SR (default 5 %%)")
    p.add_argument("--test-events", type=int, default=20_000, help="labelled SR test events")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--ensemble", type=int, default=1, help="ensemble members per fold")
    p.add_argument("--flow-epochs", type=int, default=6)
    p.add_argument("--flow-max-events", type=int, default=40_000)
    p.add_argument("--noise-seeds", type=int, default=2, help="extra CATHODE seeds on the processed store")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers (1 thread each)")
    p.add_argument("--seed", type=int, default=1, help="generator and training seed")
    p.add_argument("--workdir", type=Path, help="keep generated data / stores / artefacts here")
    p.add_argument("--json", type=Path, help="write the figures to this JSON file")
    a = p.parse_args(argv)
    if a.quick:
        a.events, a.test_events, a.s_over_b = 60_000, 10_000, max(a.s_over_b, 0.1)
        a.folds, a.ensemble, a.flow_epochs, a.flow_max_events, a.noise_seeds = 2, 1, 3, 20_000, 1

    from lhcad import log
    from lhcad import store as _store
    from lhcad.importers.compare import compare_dijet_stores

    log.setup(quiet=True)
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="lhcad-bench-roundtrip-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {"folds": a.folds, "ensemble": a.ensemble, "classifier": "hgb", "flow_epochs": a.flow_epochs,
                "flow_max_events": a.flow_max_events, "device": "cpu"}
    out: dict = {"settings": {**settings, "events": a.events, "injected_s_over_b": a.s_over_b,
                              "test_events": a.test_events, "seed": a.seed, "workers": a.workers,
                              "noise_seeds": a.noise_seeds, "workdir": str(workdir)}}

    def dump() -> None:
        if a.json:
            a.json.write_text(json.dumps({**out, "load_average": os.getloadavg()}, indent=1, default=float))

    built = build_stores(workdir, a.events, a.s_over_b, a.test_events, a.seed, a.workers)
    out["wall_s"] = dict(built["wall_s"])
    t0 = time.perf_counter()
    cmp = compare_dijet_stores(built["processed"], built["imported"], event_offset=1)
    out["wall_s"]["compare"] = time.perf_counter() - t0
    out["compare"] = {k: cmp[k] for k in ("rows", "matched", "only_reference", "only_other", "aligned",
                                          "features_equal", "equal",
                                          "not_in_other", "examples_only_reference", "examples_only_other")}
    out["compare"]["max_ulps"] = {k: v["max_ulps"] for k, v in cmp["columns"].items() if "max_ulps" in v}
    out["cutflow"] = {k: dict(_store.open_store(built[k], mode="r")["dijet"].attrs.get("cutflow", {}))
                      for k in ("processed", "imported")}
    out["s_over_b"] = {k: measured_s_over_b(built[k]) for k in ("processed", "imported")}
    print(f"stores: {cmp['rows'][0]} processed rows, {cmp['rows'][1]} imported; matched {cmp['matched']}, "
          f"only processed {cmp['only_reference']}, only imported {cmp['only_other']}; aligned {cmp['aligned']}; "
          f"features of the matched events equal to float32 precision: {cmp['features_equal']} "
          f"(max {max(out['compare']['max_ulps'].values()):.2g} float32 units)", flush=True)
    print(f"S/B in the SR: {100 * out['s_over_b']['processed']:.2f} %", flush=True)
    dump()

    runs = {"processed": (built["processed"], a.seed), "imported": (built["imported"], a.seed)}
    runs.update({f"processed_seed{a.seed + k}": (built["processed"], a.seed + k) for k in range(1, a.noise_seeds + 1)})
    results = {}
    for name, (store, seed) in runs.items():
        r = cathode(store, settings, seed, workdir / "artefacts" / name, a.workers)
        results[name] = r
        out["wall_s"][f"cathode_{name}"] = r["wall_s"]
        print(f"  CATHODE on {name:20s} seed {seed}: max SIC {r.get('max_sic', float('nan')):7.3f}  "
              f"AUC {r.get('auc', float('nan')):.4f}  template AUC {r.get('template_auc', float('nan')):.4f}  "
              f"{r['wall_s']:.0f} s", flush=True)
        out["max_sic"] = {k: v.get("max_sic") for k, v in results.items()}
        out["auc"] = {k: v.get("auc") for k, v in results.items()}
        out["template_auc"] = {k: v.get("template_auc") for k, v in results.items()}
        dump()

    import numpy as np

    noise = [results[k]["max_sic"] for k in results if k != "imported"]
    out["noise"] = {"seeds": [a.seed + k for k in range(a.noise_seeds + 1)], "max_sic": noise,
                    "std": float(np.std(noise, ddof=1)) if len(noise) > 1 else None}
    delta = abs(results["imported"]["max_sic"] - results["processed"]["max_sic"])
    out["delta_max_sic"] = delta
    out["within_noise"] = bool(out["noise"]["std"] is not None and delta <= 2 * out["noise"]["std"]) or delta == 0
    print(f"max SIC processed {results['processed']['max_sic']:.3f}, imported {results['imported']['max_sic']:.3f} "
          f"(|Δ| = {delta:.3g}); seed-to-seed std {out['noise']['std'] if out['noise']['std'] is not None else float('nan'):.3f} "
          f"over seeds {out['noise']['seeds']}; within noise: {out['within_noise']}", flush=True)
    dump()
    return out


if __name__ == "__main__":
    main()

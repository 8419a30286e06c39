"""Benchmark of the dijet processor against a raw uproot read of the same branches.

Measured in one run (on generated dijet NanoAOD from ``lhcad generate dijet``):

* ``raw_uproot_events_per_s_per_core``: ``uproot`` reading exactly the branches the processor
  materialises (coffea's access log), one process;
* ``events_per_s_per_core``: ``lhcad.processors.runner.process("dijet", ...)`` on a Dask LocalCluster
  with 1 worker × 1 thread — everything included (preprocessing, features, part writes,
  consolidation into Zarr);
* ``ratio_to_raw`` = the two above (goal ≥ 0.5);
* ``scaling_2_workers``: wall time with 1 worker / wall time with 2 workers (goal ≥ 1.8);
* ``peak_worker_rss_mb``: the largest peak RSS of any Dask worker process (``ru_maxrss``);
* for context, ``iterative_events_per_s`` / ``iterative_ratio_to_raw``: the same run in-process
  (coffea ``IterativeExecutor``), i.e. without Dask scheduling and inter-process overhead.

    python benchmarks/processors.py --json .bench/processors.json          # 2 M events
    python benchmarks/processors.py --quick                                 # smoke run (40 k events)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _generate(out: Path, events: int, seed: int) -> Path:
    fileset = out / "fileset.json"
    if fileset.exists():
        return fileset
    cmd = [sys.executable, "-m", "lhcad.cli", "-q", "generate", "dijet", "--events", str(events),
           "--out", str(out), "--seed", str(seed)]
    subprocess.run(cmd, check=True)
    return fileset


def _raw_uproot(fileset: Path, branches: list[str], step: int) -> tuple[int, float]:
    import uproot

    files = [f for spec in json.loads(fileset.read_text()).values() for f in spec["files"]]
    n = 0
    t0 = time.perf_counter()
    for f in files:
        with uproot.open(f) as fh:
            tree = fh["Events"]
            for start in range(0, tree.num_entries, step):
                arrays = tree.arrays(branches, entry_start=start, entry_stop=min(tree.num_entries, start + step),
                                     how=dict)
                n += len(next(iter(arrays.values())))
    return n, time.perf_counter() - t0


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_dask(fileset: Path, store: Path, workers: int, chunksize: int) -> tuple[dict, float, float]:
    from distributed import Client, LocalCluster

    from lhcad.cluster import Cluster
    from lhcad.config import ClusterConfig
    from lhcad.processors.runner import process

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="3GiB") as lc, Client(lc) as client:
        client.run(lambda: __import__("coffea.processor"))  # warm imports: not part of the measurement
        if store.exists():
            shutil.rmtree(store)
        t0 = time.perf_counter()
        summary = process("dijet", str(fileset), str(store), chunksize=chunksize,
                          cluster=Cluster(ClusterConfig(type="dask-local", workers=workers), client))
        wall = time.perf_counter() - t0
        rss = max(client.run(_peak_rss_mb).values())
    return summary, wall, rss


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000, help="generated QCD events (default 2 M)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 k events, small chunks")
    ap.add_argument("--chunksize", type=int, default=250_000)
    ap.add_argument("--workdir", type=Path, default=None, help="keep inputs here (reused between runs)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.chunksize = 40_000, 10_000
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lhcad import log

    log._state["quiet"] = True
    tmp = Path(tempfile.mkdtemp(prefix="lhcad-bench-"))
    work = args.workdir or tmp
    try:
        fileset = _generate(work / f"dijet_{args.events}_{args.seed}", args.events, args.seed)
        s1, wall1, rss1 = _run_dask(fileset, tmp / "store1.zarr", 1, args.chunksize)
        s2, wall2, rss2 = _run_dask(fileset, tmp / "store2.zarr", 2, args.chunksize)
        from lhcad.config import ClusterConfig
        from lhcad.processors.runner import process

        t0 = time.perf_counter()  # the same processor in this process (no Dask): scheduling overhead
        process("dijet", str(fileset), str(tmp / "store0.zarr"), chunksize=args.chunksize,
                cluster=ClusterConfig(type="iterative"))
        wall0 = time.perf_counter() - t0
        branches = s1["branches_read"]
        n_raw, raw_s = _raw_uproot(fileset, branches, args.chunksize)
        events = s1["events_processed"]
        assert n_raw == events, (n_raw, events)
        eps = events / wall1
        raw_eps = n_raw / raw_s
        figures = {
            "events": events,
            "rows_selected": s1["rows"],
            "chunksize": args.chunksize,
            "branches_read": branches,
            "events_per_s_per_core": round(eps, 1),
            "raw_uproot_events_per_s_per_core": round(raw_eps, 1),
            "ratio_to_raw": round(eps / raw_eps, 3),
            "iterative_events_per_s": round(events / wall0, 1),
            "iterative_ratio_to_raw": round(events / wall0 / raw_eps, 3),
            "wall_1_worker_s": round(wall1, 2),
            "wall_2_workers_s": round(wall2, 2),
            "scaling_2_workers": round(wall1 / wall2, 3),
            "peak_worker_rss_mb": round(max(rss1, rss2), 1),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in figures.items():
        if k != "branches_read":
            print(f"{k:36s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()

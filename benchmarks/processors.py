"""Benchmark of the dijet processor against a raw uproot read of the same branches.

Measured in one run (on generated dijet NanoAOD from ``lhcad generate dijet``):

* ``raw_uproot_events_per_s_per_core``: ``uproot`` reading exactly the branches the processor
  materialises (coffea's access log), in one warmed-up worker process of its own (as a Dask worker;
  ``raw_uproot_in_driver_events_per_s``: the same read in the benchmark's process, for context);
* ``events_per_s_per_core``: ``lhcad.processors.runner.process("dijet", ...)`` on a Dask LocalCluster
  with 1 worker × 1 thread — everything included (preprocessing, features, part writes,
  consolidation into Zarr);
* ``ratio_to_raw`` = the two above (goal ≥ 0.5);
* ``scaling_2_workers``: wall time with 1 worker / wall time with 2 workers (goal ≥ 1.8);
* ``peak_worker_rss_mb``: the largest peak RSS of any Dask worker process (``ru_maxrss``);
* for context, ``iterative_events_per_s`` / ``iterative_ratio_to_raw``: the same run in-process
  (coffea ``IterativeExecutor``), i.e. without Dask scheduling and inter-process overhead;
* CPU-time figures (``cpu_*``: user + system seconds of the driver, the Dask scheduler and the
  workers), which a shared, loaded machine distorts much less than wall time, the 1-worker run's
  wall-time breakdown (``breakdown_1_worker``: preprocess / run / consolidate seconds) and the CPU
  seconds of each step of the processor path measured in-process (``cpu_breakdown_s``: raw uproot
  read vs NanoEvents open, branch reads, features, part writes, consolidation into Zarr);
* the ceiling those steps set: ``cpu_steps_s`` (their sum, one core, no executor), the best
  ``ratio_to_raw`` they allow (``cpu_ceiling_ratio_to_raw`` = raw read CPU / steps CPU) and what the
  1-worker Dask run spends beyond them (``cpu_overhead_s_1_worker``: scheduler, worker and driver
  event loops, task (de)serialisation, coffea's per-chunk file open);
* ``raw_scaling_2_procs``: the machine's own reference for the scaling figure, measured in the
  same run: the raw uproot read of the same chunks in one process vs split over two;
* ``scaling_2_workers_run`` / ``_consolidate``: the speed-up of each phase alone; ``store_mb`` vs
  ``columns_raw_mb``: the dijet table on disk vs its uncompressed size (codec: ``store_codec``);
* the load average (1, 5, 15 min) before and after every repeat: on a shared machine the wall
  figures are only as good as that; the CPU figures (best of the repeats) much less disturbed.

Fairness: the raw reference read runs in a worker process of its own, with the Dask workers'
allocator settings (:func:`lhcad.cluster.tune_malloc`), warmed up like them; every timed Dask run
follows an untimed pass over the same fileset and chunk size on the same (fresh) cluster, so
one-time imports, numba's one-time initialisation per process and the growth of each worker's heap
to its steady size are not counted (as for the raw reference processes, warmed with a whole chunk
each), and preprocesses its files itself (coffea's metadata cache is cleared); the input files are
read once before any measurement (warm page cache for every measurement alike); everything happens in the same
invocation. With ``--repeat N`` each measurement is taken N times and the best of each is reported
(wall figures from the fastest run, CPU figures the smallest of the repeats): the 1- and 2-worker
Dask runs interleaved first, then the raw reads, then the in-process runs (which would disturb the
Dask runs' scheduler in this process). Each Dask measurement starts lhcad's own dask-local cluster
(workers × 1 thread, worker processes), imports and warms it up, then times one ``process`` call,
as a user running ``lhcad process`` against a running cluster would see it.

    python benchmarks/processors.py --json .bench/processors.json          # 2 M events, 500 k chunks
    python benchmarks/processors.py --quick                                 # smoke run (40 k events)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np


def _generate(out: Path, events: int, seed: int) -> Path:
    fileset = out / "fileset.json"
    if fileset.exists():
        return fileset
    cmd = [sys.executable, "-m", "lhcad.cli", "-q", "generate", "dijet", "--events", str(events),
           "--out", str(out), "--seed", str(seed)]
    subprocess.run(cmd, check=True)
    return fileset


def _files(fileset: Path) -> list[str]:
    return [f for spec in json.loads(fileset.read_text()).values()
            for f in (spec["files"] if isinstance(spec, dict) else spec)]


def _warm_page_cache(fileset: Path) -> None:
    for f in _files(fileset):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _chunk_ranges(fileset: Path, step: int) -> list[tuple[str, int, int]]:
    """(file, start, stop) of every chunk of ``step`` events, in fileset order (as the processor's)."""
    import uproot

    ranges = []
    for f in _files(fileset):
        with uproot.open(f) as fh:
            n = fh["Events"].num_entries
        ranges += [(f, a, min(n, a + step)) for a in range(0, n, step)]
    return ranges


def _raw_uproot(ranges: list[tuple[str, int, int]], branches: list[str]) -> tuple[int, float, float]:
    """(events, wall s, CPU s) of the raw read of ``ranges`` in this process."""
    t0 = time.perf_counter()
    n, cpu = _read_ranges(ranges, branches)
    return n, time.perf_counter() - t0, cpu


def _read_ranges(ranges: list[tuple[str, int, int]], branches: list[str]) -> tuple[int, float]:
    """(events, CPU seconds) of the raw uproot read of ``ranges`` (file, start, stop) in this process."""
    import uproot

    n = 0
    c0 = _cpu_s()
    for f, start, stop in ranges:
        with uproot.open(f) as fh:
            n += len(next(iter(fh["Events"].arrays(branches, entry_start=start, entry_stop=stop, how=dict).values())))
    return n, _cpu_s() - c0


def _raw_processes(fileset: Path, branches: list[str], step: int, repeat: int) -> dict[str, float]:
    """The raw uproot read of the processor's chunks in worker processes of its own.

    Two spawned processes with the workers' allocator settings, warmed up (imports, one chunk each)
    like the Dask workers are: all chunks read in one of them (the ``ratio_to_raw`` reference) and
    split over both (the machine's own reference for ``scaling_2_workers``); best of ``repeat`` each.
    Not in the benchmark's own process: a large read there, which also runs the Dask scheduler,
    slowed the Dask run after it (2 workers: 1.24-1.44 s -> 2.77-3.20 s wall).
    """
    from lhcad.cluster import tune_malloc

    ranges = _chunk_ranges(fileset, step)
    halves = [ranges[0::2], ranges[1::2]]
    one, one_cpu, two = [], [], []
    with multiprocessing.get_context("spawn").Pool(2, initializer=tune_malloc) as pool:
        pool.starmap(_read_ranges, [(r[:1], branches) for r in halves], chunksize=1)  # imports
        for _ in range(repeat):
            t0 = time.perf_counter()
            events, cpu = pool.apply(_read_ranges, (ranges, branches))
            one.append(time.perf_counter() - t0)
            one_cpu.append(cpu)
            t0 = time.perf_counter()
            pool.starmap(_read_ranges, [(r, branches) for r in halves], chunksize=1)
            two.append(time.perf_counter() - t0)
    return {"events": events, "wall_1": min(one), "cpu_1": min(one_cpu), "wall_2": min(two)}


def _warm_imports() -> None:
    import coffea.nanoevents  # noqa: F401
    import coffea.processor  # noqa: F401

    import lhcad.processors.dijet  # noqa: F401


def _warmup_fileset(tmp: Path) -> Path:
    """A 10 k-event file: a first run on each fresh cluster (one-time costs) before the timed run."""
    fileset = tmp / "warmup.json"
    if not fileset.exists():
        from lhcad.processors.samples import write_nanoaod

        path = write_nanoaod(tmp / "warmup.root", 10_000, seed=1)
        fileset.write_text(json.dumps({"warmup": [path]}))
    return fileset


def _warm_up(fileset: Path, store: Path, chunksize: int, cluster) -> None:
    """One untimed pass over the same fileset and chunks, before the timed one on the same workers.

    The raw reference processes are warmed up with a whole chunk each; the workers get the same: a
    first pass with chunks of the timed size grows each worker's heap to its steady size (kept by
    :func:`lhcad.cluster.tune_malloc`). With only the 10 k-event warm-up file, the first 500 k chunk
    on each worker paid for fresh memory pages, which on the development VM costs more than the
    chunk's read (2 workers x 2 chunks each: run phase 0.53-0.83 s vs 0.30-0.37 s once warm).
    """
    from lhcad.processors.runner import process

    warm = store.with_name(f"{store.stem}-warmup.zarr")
    process("dijet", str(fileset), str(warm), chunksize=chunksize, cluster=cluster)
    shutil.rmtree(warm, ignore_errors=True)
    _forget_file_metadata()


def _forget_file_metadata() -> None:
    """Every run preprocesses its files itself (coffea caches file metadata per process)."""
    from coffea.processor import executor

    executor.DEFAULT_METADATA_CACHE.clear()


def _cpu_breakdown(fileset: Path, branches: list[str], chunksize: int, tmp: Path) -> dict[str, float]:
    """CPU seconds of each step of the processor path, in this process, over the whole fileset.

    The same steps as coffea's work function + :meth:`StoreProcessor.process` + consolidation, timed
    separately: ``raw_uproot`` (``TTree.arrays`` of the branches), ``open_nanoevents`` (file open +
    NanoEvents factory with the processor's ``preload`` branches, i.e. including their bulk read, as
    coffea's work function does it), ``read_branches`` (materialising the branches through NanoEvents),
    ``features`` (:meth:`DijetProcessor.compute` on materialised buffers), ``part_write`` and
    ``consolidate`` (parts → Zarr).
    """
    import uproot
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from lhcad import log
    from lhcad.cluster import tune_malloc
    from lhcad.log import progress_map
    from lhcad.processors import consolidate as cons
    from lhcad.processors import parts
    from lhcad.processors.base import branch, raw_events
    from lhcad.processors.dijet import DijetProcessor

    tune_malloc()
    log._state["quiet"] = True
    steps = ("raw_uproot", "open_nanoevents", "read_branches", "features", "part_write", "consolidate")
    out = dict.fromkeys(steps, 0.0)
    parts_root = str(tmp / "breakdown.zarr" / "_parts" / "dijet")
    entries = []
    for f, start, stop in _chunk_ranges(fileset, chunksize):
        _read_ranges([(f, start, stop)], branches)  # the first read of a chunk pays fresh pages
        out["raw_uproot"] += _read_ranges([(f, start, stop)], branches)[1]
        proc = DijetProcessor()
        proc.missing = set()
        c = _cpu_s()
        fh = uproot.open({f: None})
        ev = NanoEventsFactory.from_root(file=fh, treepath="Events", entry_start=start, entry_stop=stop,
                                         schemaclass=NanoAODSchema, mode="virtual",
                                         preload=proc.bulk_branches()).events()
        raw = raw_events(ev)
        out["open_nanoevents"] += _cpu_s() - c
        c = _cpu_s()
        for b in branches:
            values = branch(raw, b)
            if b.startswith("FatJet_"):
                np.asarray(values.layout.content.data)
            else:
                ak.to_numpy(values)
        out["read_branches"] += _cpu_s() - c
        c = _cpu_s()
        arrays, _extra = proc.compute(raw, {})
        out["features"] += _cpu_s() - c
        key = f"c{len(entries):04d}"
        entry = {"key": key, "dataset": "data", "status": "done", "events_out": len(arrays["mjj"])}
        c = _cpu_s()
        parts.write_part(parts_root, key, arrays, entry)
        out["part_write"] += _cpu_s() - c
        entries.append(entry)
        fh.close()
    from lhcad import store as _store

    c = _cpu_s()
    root = _store.open_store(str(tmp / "breakdown.zarr"), mode="a")
    cons._write_rows(root, str(tmp / "breakdown.zarr"), "dijet", parts_root, entries, {"data": 0}, progress_map,
                    workers=1)
    out["consolidate"] += _cpu_s() - c
    shutil.rmtree(tmp / "breakdown.zarr", ignore_errors=True)
    return {k: round(v, 3) for k, v in out.items()}


def _row_bytes() -> float:
    """Bytes per dijet row of the store's columns, uncompressed (MB per million rows)."""
    from lhcad.store import DIJET_COLUMNS

    wide = {"run", "luminosityBlock", "event"}  # int64; every other column is 4 bytes
    return sum(8 if c in wide else 4 for c in DIJET_COLUMNS) / 1e6


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_dask(fileset: Path, store: Path, workers: int, chunksize: int) -> tuple[dict, float, float, float]:
    from distributed import Client

    from lhcad.cluster import Cluster, make_dask_cluster
    from lhcad.config import ClusterConfig
    from lhcad.processors.runner import process

    # lhcad's own dask-local cluster (worker processes with lhcad.cluster.worker_environ())
    cfg = ClusterConfig(type="dask-local", workers=workers, threads_per_worker=1, memory_limit="3GiB")
    with make_dask_cluster(cfg) as lc, Client(lc) as client:
        client.run(_warm_imports)  # one-time imports on a fresh worker: not part of the measurement
        cluster = Cluster(cfg, client)
        _warm_up(fileset, store, chunksize, cluster)
        if store.exists():
            shutil.rmtree(store)

        separate_scheduler = client.run_on_scheduler(os.getpid) != os.getpid()

        def cpu_now() -> float:  # driver (+ scheduler, in-process for a LocalCluster) + workers
            sched = client.run_on_scheduler(_cpu_s) if separate_scheduler else 0.0
            return _cpu_s() + sched + sum(client.run(_cpu_s).values())

        c0 = cpu_now()
        t0 = time.perf_counter()
        summary = process("dijet", str(fileset), str(store), chunksize=chunksize, cluster=cluster)
        wall = time.perf_counter() - t0
        cpu = cpu_now() - c0
        rss = max(client.run(_peak_rss_mb).values())
    summary["store_mb"] = _size_mb(store / "dijet")
    shutil.rmtree(store, ignore_errors=True)
    return summary, wall, cpu, rss


def _size_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def _run_iterative(fileset: Path, store: Path, chunksize: int) -> tuple[float, float]:
    from lhcad.config import ClusterConfig
    from lhcad.processors.runner import process

    _warm_up(fileset, store, chunksize, ClusterConfig(type="iterative"))
    c0, t0 = _cpu_s(), time.perf_counter()
    process("dijet", str(fileset), str(store), chunksize=chunksize, cluster=ClusterConfig(type="iterative"))
    wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
    shutil.rmtree(store, ignore_errors=True)
    return wall, cpu


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000, help="generated QCD events (default 2 M)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 40 k events, small chunks")
    ap.add_argument("--chunksize", type=int, default=500_000,
                    help="events per chunk (default 500 k: fewer file opens and NanoEvents builds per event)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep inputs here (reused between runs)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1,
                    help="take every measurement N times (interleaved), report the best")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.chunksize = 40_000, 10_000
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lhcad import log
    from lhcad.cluster import tune_malloc

    tune_malloc()  # the raw read and the in-process runs get the allocator settings the workers get

    log._state["quiet"] = True
    tmp = Path(tempfile.mkdtemp(prefix="lhcad-bench-"))
    work = args.workdir or tmp
    try:
        fileset = _generate(work / f"dijet_{args.events}_{args.seed}", args.events, args.seed)
        _warm_page_cache(fileset)
        best: dict[str, tuple] = {}

        min_cpu: dict[str, float] = {}
        load = [os.getloadavg()]

        def keep(name: str, result: tuple, wall: float, cpu: float) -> None:
            if name not in best or wall < best[name][0]:
                best[name] = (wall, *result)
            min_cpu[name] = min(cpu, min_cpu.get(name, cpu))

        # the Dask runs first, nothing heavy in this process (the scheduler's) in between
        for _ in range(args.repeat):
            s1, wall1, cpu1, rss1 = _run_dask(fileset, tmp / "store1.zarr", 1, args.chunksize)
            keep("dask1", (s1, rss1), wall1, cpu1)
            s2, wall2, cpu2, rss2 = _run_dask(fileset, tmp / "store2.zarr", 2, args.chunksize)
            keep("dask2", (s2, rss2), wall2, cpu2)
            load.append(os.getloadavg())
        branches = s1["branches_read"]
        raw = _raw_processes(fileset, branches, args.chunksize, args.repeat)
        for _ in range(args.repeat):
            wall0, cpu0 = _run_iterative(fileset, tmp / "store0.zarr", args.chunksize)
            keep("iterative", (), wall0, cpu0)
            n_drv, drv_s, drv_cpu = _raw_uproot(_chunk_ranges(fileset, args.chunksize), branches)
            keep("raw_in_driver", (n_drv,), drv_s, drv_cpu)
        # in a fresh process of its own (as the raw reference): in this one, after the runs above, the
        # same steps measured up to 2x more CPU (part writes 0.27-0.54 s vs 0.07 s)
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.apply(_cpu_breakdown, (_warmup_fileset(tmp), branches, 2000, tmp))  # one-time costs
            breakdowns = [pool.apply(_cpu_breakdown, (fileset, branches, args.chunksize, tmp))
                          for _ in range(args.repeat)]
        breakdown = {k: min(b[k] for b in breakdowns) for k in breakdowns[0]}
        load.append(os.getloadavg())
        wall1, s1, rss1 = best["dask1"]
        wall2, s2, rss2 = best["dask2"]
        (wall0,) = best["iterative"]
        drv_s, _n = best["raw_in_driver"]
        cpu1, cpu2, cpu0 = (min_cpu[k] for k in ("dask1", "dask2", "iterative"))
        n_raw, raw_s, raw_cpu = raw["events"], raw["wall_1"], raw["cpu_1"]
        steps = sum(v for k, v in breakdown.items() if k != "raw_uproot")
        events = s1["events_processed"]
        assert n_raw == events, (n_raw, events)
        eps = events / wall1
        raw_eps = n_raw / raw_s
        figures = {
            "events": events,
            "rows_selected": s1["rows"],
            "chunksize": args.chunksize,
            "repeat": args.repeat,
            "branches_read": branches,
            "events_per_s_per_core": round(eps, 1),
            "raw_uproot_events_per_s_per_core": round(raw_eps, 1),
            "ratio_to_raw": round(eps / raw_eps, 3),
            # the same read in the benchmark's own process (warm, and where the scheduler runs), after the Dask runs
            "raw_uproot_in_driver_events_per_s": round(events / drv_s, 1),
            "ratio_to_raw_in_driver": round(eps * drv_s / events, 3),
            "iterative_events_per_s": round(events / wall0, 1),
            "iterative_ratio_to_raw": round(events / wall0 / raw_eps, 3),
            "wall_1_worker_s": round(wall1, 2),
            "wall_2_workers_s": round(wall2, 2),
            "scaling_2_workers": round(wall1 / wall2, 3),
            # the same machine's ceiling for reading alone, measured in this run: the raw uproot read
            # of the same chunks in 1 process vs 2 (memory-bound work scales less than 2x on a VM)
            "raw_wall_1_proc_s": round(raw["wall_1"], 3),
            "raw_wall_2_procs_s": round(raw["wall_2"], 3),
            "raw_scaling_2_procs": round(raw["wall_1"] / raw["wall_2"], 3),
            "scaling_2_workers_run": round(s1["run_s"] / s2["run_s"], 3),
            "scaling_2_workers_consolidate": round(s1["consolidate_s"] / s2["consolidate_s"], 3),
            "peak_worker_rss_mb": round(max(rss1, rss2), 1),
            "breakdown_1_worker": {k: s1[k] for k in ("preprocess_s", "run_s", "consolidate_s")},
            "breakdown_2_workers": {k: s2[k] for k in ("preprocess_s", "run_s", "consolidate_s")},
            "cpu_s_1_worker": round(cpu1, 2),
            "cpu_s_2_workers": round(cpu2, 2),
            "cpu_s_iterative": round(cpu0, 2),
            "cpu_s_raw_uproot": round(raw_cpu, 2),
            "cpu_ratio_to_raw": round(raw_cpu / cpu1, 3),
            "cpu_iterative_ratio_to_raw": round(raw_cpu / cpu0, 3),
            "cpu_breakdown_s": breakdown,
            # the processor path's own steps on one core, without coffea executor / Dask / driver
            # costs: the best ratio_to_raw these steps allow (the ceiling), and what the 1-worker
            # Dask run spends beyond them (scheduler, worker event loops, driver, task (de)serialising)
            "cpu_steps_s": round(steps, 3),
            "cpu_ceiling_ratio_to_raw": round(breakdown["raw_uproot"] / steps, 3),
            "cpu_overhead_s_1_worker": round(cpu1 - steps, 3),
            "store_codec": "blosc lz4 + shuffle (lhcad.store.column_array_options)",
            "store_mb": s1["store_mb"],
            "columns_raw_mb": round(s1["rows"] * _row_bytes(), 1),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "load_average_1_5_15_per_repeat": [[round(x, 2) for x in a] for a in load],
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

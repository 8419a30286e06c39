"""Generator speed: dijet events per second per core, including NanoAOD (ROOT) writing.

The generator is single-threaded numpy + uproot, so one process uses one core; the per-core rate is
events / CPU seconds of this process (``time.process_time``), which stays meaningful on a shared,
loaded machine. The wall-clock rate and the load average are printed next to it.

    python benchmarks/generate.py                 # 2 M dijet events (+ L1, DQM figures)
    python benchmarks/generate.py --quick         # 200 k events, a smoke run
    python benchmarks/generate.py --json out.json # also write the figures as JSON

JSON keys: ``events_per_s_per_core`` (dijet, incl. writing; goal ≥ 83 333 = 5 M/min),
``events_per_min_per_core``, ``sampling_events_per_s_per_core`` (physics only), ``wall_events_per_s``,
``l1_events_per_s_per_core``, ``dqm_events_per_s_per_core``, ``events``, ``load_average``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.process_time() - c0, time.perf_counter() - w0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000, help="dijet events to generate (default 2 M)")
    parser.add_argument("--quick", action="store_true", help="200 k dijet events, small L1/DQM samples")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    n = 200_000 if args.quick else args.events

    from lhcad import log
    from lhcad.config import GenerateDijetConfig, GenerateDQMConfig, GenerateL1Config
    from lhcad.generate import dijet as phys
    from lhcad.generate.common import rng_for
    from lhcad.generate.dijet_output import generate_dijet
    from lhcad.generate.dqm import generate_dqm
    from lhcad.generate.l1 import generate_l1

    log.setup(quiet=True)
    tmp = Path(tempfile.mkdtemp(prefix="lhcad-bench-gen-"))
    try:
        phys.make_block(rng_for(0, "qcd"), 10_000)  # warm-up (imports, page faults)
        _, cpu_s, _ = _timed(lambda: phys.make_block(rng_for(1, "qcd"), min(n, 500_000)))
        sampling_rate = min(n, 500_000) / cpu_s

        cfg = GenerateDijetConfig(events=n, signal_events=n // 100, events_per_file=500_000, seed=1)
        truth, cpu, wall = _timed(lambda: generate_dijet(cfg, tmp / "dijet"))
        n_written = truth["datasets"]["data"]["events"]
        size = sum(p.stat().st_size for p in (tmp / "dijet").glob("*.root"))
        shutil.rmtree(tmp / "dijet")

        n_l1 = 20_000 if args.quick else 200_000
        l1_cfg = GenerateL1Config(events=n_l1, signal_events=0, blackbox_events=0, seed=1)
        _, l1_cpu, _ = _timed(lambda: generate_l1(l1_cfg, tmp / "l1"))
        dqm_cfg = GenerateDQMConfig(runs=4, bad_runs=2, ls_per_run=100 if args.quick else 500, events_per_ls=200, seed=1)
        dqm_truth, dqm_cpu, _ = _timed(lambda: generate_dqm(dqm_cfg, tmp / "dqm"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "events": n_written,
        "events_per_s_per_core": round(n_written / cpu, 1),
        "events_per_min_per_core": round(60 * n_written / cpu),
        "goal_events_per_min_per_core": 5_000_000,
        "sampling_events_per_s_per_core": round(sampling_rate, 1),
        "wall_events_per_s": round(n_written / wall, 1),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "root_bytes_per_event": round(size / n_written, 1),
        "l1_events_per_s_per_core": round(n_l1 * 1.0 / l1_cpu, 1),
        "dqm_events_per_s_per_core": round(dqm_truth["datasets"]["dqm"]["events"] / dqm_cpu, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    print(f"dijet: {n_written:,} events in {cpu:.1f} CPU s / {wall:.1f} wall s "
          f"-> {figures['events_per_s_per_core']:,.0f} events/s/core "
          f"({figures['events_per_min_per_core'] / 1e6:.1f} M/min/core, goal 5 M), "
          f"physics only {sampling_rate:,.0f}/s, {figures['root_bytes_per_event']} B/event")
    print(f"l1: {figures['l1_events_per_s_per_core']:,.0f} events/s/core   "
          f"dqm: {figures['dqm_events_per_s_per_core']:,.0f} events/s/core   load average {figures['load_average']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()

"""``lhcad generate dijet``: the dijet datasets as NanoAOD files + fileset.json + truth.json.

Datasets (coffea fileset keys):

``data``
    ``events`` QCD events plus the injected signal, shuffled within each file (run 1). The signal
    amount is either ``signal_events`` (all m_jj) or ``s_over_b``: S/B *inside the SR window after the
    |Δη| < 1.3 selection*, where B is the expected number of QCD events in the window (from a fixed
    pilot sample) and S is met exactly by taking the shortest prefix of the signal stream with that
    many in-window events (so the out-of-window tail of the signal is kept, as in real data).
``extra_bkg``
    ``extra_background`` QCD events in the SR window (|Δη| < 1.3, m_jj in SR) for idealized AD (run 2).
``test``
    ``test_events`` labelled events in the SR window, 80 % QCD and 20 % signal (run 3).

Files hold at most ``events_per_file`` QCD events (+ their share of the signal), generated and
written in chunks of 100 k events (shuffled within a chunk) so memory stays small. Every chunk's
content is a function of (seed, options, file and chunk index) only (see :mod:`lhcad.generate.common`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np

import lhcad
from lhcad.config import GenerateDijetConfig
from lhcad.generate import dijet as phys
from lhcad.generate.common import (
    OutputDir,
    fileset_entry,
    rng_for,
    split_counts,
)
from lhcad.generate.signals import get_signal
from lhcad.log import progress

log = logging.getLogger(__name__)

PILOT_EVENTS = 100_000
RUNS = {"data": 1, "extra_bkg": 2, "test": 3}
TEST_SIGNAL_FRACTION = 0.2
CHUNK = 100_000  # events generated (and held in memory) at a time; one ROOT basket each
CHUNK_STRIDE = 10_000  # random-stream part = CHUNK_STRIDE * file index + chunk index


def _largest_remainder(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (deterministic)."""
    w = np.asarray(weights, dtype=float)
    if total == 0 or w.sum() == 0:
        return [0] * len(weights)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(int)
    rest = total - base.sum()
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:rest]] += 1
    return base.tolist()


def window_fraction(cfg: GenerateDijetConfig) -> float:
    """Fraction of QCD events (after the trigger option) in the SR window with |Δη| < 1.3."""
    return _window_fraction(tuple(cfg.sr), cfg.trigger_pt)


@functools.lru_cache(maxsize=16)
def _window_fraction(sr: tuple[float, float], trigger_pt: float | None) -> float:
    # a fixed pilot sample (seed 0): the same expected B for every user seed
    blk = phys.sample_events(rng_for(0, "pilot"), PILOT_EVENTS)
    passed = np.ones(len(blk), bool) if trigger_pt is None else blk.fatjet["pt"][:, :2].max(axis=1) > trigger_pt
    return float((phys.in_window(blk, sr) & passed).sum() / passed.sum())


def _trigger(cfg: GenerateDijetConfig):
    if cfg.trigger_pt is None:
        return None
    return lambda blk: blk.fatjet["pt"][:, :2].max(axis=1) > cfg.trigger_pt


def _sr_accept(cfg: GenerateDijetConfig):
    trig = _trigger(cfg)

    def accept(blk):
        ok = phys.in_window(blk, cfg.sr)
        return ok if trig is None else ok & trig(blk)

    return accept


def _sr_mrange(cfg: GenerateDijetConfig) -> tuple[float, float]:
    """Parton-level M range that feeds the SR window (resolution + FSR tail covered)."""
    return (max(phys.M_RANGE[0], 0.75 * cfg.sr[0]), min(phys.M_RANGE[1], 1.35 * cfg.sr[1]))


def generate_dijet(cfg: GenerateDijetConfig, out_dir: str | Path, lhco_h5: str | Path | None = None) -> dict[str, Any]:
    """Write the dijet datasets into ``out_dir``; returns the truth record (also ``truth.json``)."""
    signal = get_signal(cfg.signal, cfg.signal_mass, cfg.daughter_masses)
    if lhco_h5 is not None:
        from lhcad.generate.h5 import check_h5_target

        check_h5_target(lhco_h5)
    sr_accept = _sr_accept(cfg)
    trig = _trigger(cfg)
    window_frac = None
    s_in_window_target = None
    if cfg.s_over_b is not None:
        window_frac = window_fraction(cfg)
        s_in_window_target = int(round(cfg.s_over_b * cfg.events * window_frac))

    qcd_sizes = split_counts(cfg.events, cfg.events_per_file)
    if cfg.signal_events is not None:
        sig_sizes = _largest_remainder(cfg.signal_events, qcd_sizes)
    elif s_in_window_target is not None:
        sig_sizes = _largest_remainder(s_in_window_target, qcd_sizes)
    else:
        sig_sizes = [0] * len(qcd_sizes)

    truth_sets: dict[str, dict[str, Any]] = {}
    fileset: dict[str, Any] = {}
    lhco_blocks: dict[str, list] = {}
    with OutputDir(out_dir) as out, progress() as bar:
        n_tasks = len(qcd_sizes) + len(split_counts(cfg.extra_background, cfg.events_per_file)) \
            + len(split_counts(cfg.test_events, cfg.events_per_file))
        task = bar.add_task("generate dijet", total=n_tasks)

        def write(dataset: str, index: int, blocks, first_event: int) -> tuple[Path, int]:
            """Write the blocks yielded by ``blocks`` as one file; returns (path, events)."""
            count = 0

            def chunks():
                nonlocal count
                for block in blocks:
                    yield phys.to_branches(block, RUNS[dataset], first_event + count)
                    if lhco_h5 is not None:
                        from lhcad.generate.h5 import lhco_columns

                        lhco_blocks.setdefault(dataset, []).append(lhco_columns(block))
                    count += len(block)

            path = out.write_root_chunks(f"{dataset}_{index:03d}.root", chunks())
            bar.advance(task)
            return path, count

        # --- data: QCD + injected signal, shuffled (within chunks of <= CHUNK QCD events)
        stats = {"b": 0, "s": 0, "b_win": 0, "s_win": 0}

        def data_blocks(i: int, nq: int, ns: int):
            sub_q = split_counts(nq, CHUNK)
            for j, (mq, ms) in enumerate(zip(sub_q, _largest_remainder(ns, sub_q), strict=True)):
                part = CHUNK_STRIDE * i + j
                parts = [phys.sample_events(rng_for(cfg.seed, "qcd", part), mq, accept=trig)]
                if ms:
                    srng = rng_for(cfg.seed, "signal", part)
                    if cfg.signal_events is not None:
                        parts.append(phys.sample_events(srng, ms, signal, accept=trig))
                    else:
                        parts.append(phys.sample_prefix_until(srng, ms, signal, sr_accept, keep=trig))
                blk = phys.Block.concat(parts)
                blk = blk.take(rng_for(cfg.seed, "shuffle", part).permutation(len(blk)))
                win = sr_accept(blk)
                is_sig = blk.event["truth_label"] > 0
                stats["b_win"] += int((win & ~is_sig).sum())
                stats["s_win"] += int((win & is_sig).sum())
                stats["b"] += int((~is_sig).sum())
                stats["s"] += int(is_sig.sum())
                yield blk

        files, first = [], 1
        for i, (nq, ns) in enumerate(zip(qcd_sizes, sig_sizes, strict=True)):
            path, n = write("data", i, data_blocks(i, nq, ns), first)
            files.append(path)
            first += n
        truth_sets["data"] = {
            "files": [p.name for p in files], "events": stats["b"] + stats["s"], "background": stats["b"],
            "signal": stats["s"], "background_in_sr": stats["b_win"], "signal_in_sr": stats["s_win"],
            "s_over_b_in_sr": (stats["s_win"] / stats["b_win"]) if stats["b_win"] else None,
        }
        fileset["data"] = fileset_entry(files, {"kind": "dijet", "run": RUNS["data"], "labelled": False})

        # --- extra background: SR-only QCD
        if cfg.extra_background:
            def extra_blocks(i: int, n: int):
                for j, m in enumerate(split_counts(n, CHUNK)):
                    yield phys.sample_events(rng_for(cfg.seed, "extra_bkg", CHUNK_STRIDE * i + j), m,
                                             accept=sr_accept, m_range=_sr_mrange(cfg))

            files, first = [], 1
            for i, n in enumerate(split_counts(cfg.extra_background, cfg.events_per_file)):
                path, m = write("extra_bkg", i, extra_blocks(i, n), first)
                files.append(path)
                first += m
            truth_sets["extra_bkg"] = {"files": [p.name for p in files], "events": cfg.extra_background,
                                       "background": cfg.extra_background, "signal": 0}
            fileset["extra_bkg"] = fileset_entry(files, {"kind": "dijet", "run": RUNS["extra_bkg"],
                                                         "labelled": True, "sr": list(cfg.sr)})

        # --- test: labelled SR events, 80 % QCD / 20 % signal
        if cfg.test_events:
            counts = {"b": 0, "s": 0}

            def test_blocks(i: int, n: int):
                for j, m in enumerate(split_counts(n, CHUNK)):
                    part = CHUNK_STRIDE * i + j
                    ms = int(round(TEST_SIGNAL_FRACTION * m))
                    q = phys.sample_events(rng_for(cfg.seed, "test_qcd", part), m - ms, accept=sr_accept,
                                           m_range=_sr_mrange(cfg))
                    s = phys.sample_events(rng_for(cfg.seed, "test_signal", part), ms, signal, accept=sr_accept)
                    counts["b"] += m - ms
                    counts["s"] += ms
                    blk = phys.Block.concat([q, s])
                    yield blk.take(rng_for(cfg.seed + 1_000_003, "shuffle", part).permutation(len(blk)))

            files, first = [], 1
            for i, n in enumerate(split_counts(cfg.test_events, cfg.events_per_file)):
                path, m = write("test", i, test_blocks(i, n), first)
                files.append(path)
                first += m
            truth_sets["test"] = {"files": [p.name for p in files], "events": counts["b"] + counts["s"],
                                  "background": counts["b"], "signal": counts["s"]}
            fileset["test"] = fileset_entry(files, {"kind": "dijet", "run": RUNS["test"], "labelled": True,
                                                    "sr": list(cfg.sr)})

        truth = {
            "generator": "lhcad.generate.dijet",
            "lhcad_version": lhcad.__version__,
            "seed": cfg.seed,
            "config": cfg.model_dump(mode="json"),
            "signal": signal.describe(),
            "sr": list(cfg.sr),
            "delta_eta_cut": phys.DELTA_ETA_CUT,
            "s_over_b_target": cfg.s_over_b,
            "qcd_window_fraction": window_frac,
            "datasets": truth_sets,
            "truth_branches": {"truth_label": "0 QCD, 1 signal",
                               "truth_process": {"qcd": 0, signal.name: signal.code}},
            "runs": RUNS,
            "physics": {
                "sqrt_s": phys.SQRT_S, "dijet_function_p1_p2_p3": list(phys.DIJET_PARAMS),
                "m_range_parton": list(phys.M_RANGE), "chi_max": phys.CHI_MAX,
                "pt_resolution": phys.PT_RESOLUTION, "mass_resolution": phys.MASS_RESOLUTION,
                "fsr_tail": {"probability": phys.FSR_PROB, "scale": phys.FSR_SCALE, "max": phys.FSR_MAX},
            },
        }
        if lhco_h5 is not None:
            from lhcad.generate.h5 import write_lhco

            truth["lhco_h5"] = str(write_lhco(out, lhco_h5, lhco_blocks))
        out.write_json("fileset.json", fileset)
        out.write_json("truth.json", truth)
    log.info("dijet: %s", ", ".join(f"{k}: {v['events']} events" for k, v in truth_sets.items()))
    return truth

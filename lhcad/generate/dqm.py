"""Data-quality-monitoring runs as NanoAOD: Run 2 runs, per-LS luminosity, injected detector faults.

Runs and luminosity
    Run numbers lie in the 2017 range (from 297050, increments of 3–60 between runs, a new LHC fill
    with probability 1/2 per run, fills from 5839). A run has ``ls_per_run`` × U(0.7, 1.3)
    lumisections (LS) of 23.31 s. The instantaneous luminosity decays over the fill as
    exp(−t/τ), τ ~ U(8, 14) h, from a peak of U(0.12, 0.40) /pb per LS (≈ 0.5–1.7 × 10³⁴ cm⁻²s⁻¹),
    with 1 % LS-to-LS jitter; recorded = delivered × U(0.93, 0.99); ⟨PU⟩ = 250 × delivered(/pb)
    (≈ 40 at 0.16 /pb, as in 2017). The events of an LS are Poisson(events_per_ls × L/L_max), L_max
    the highest LS luminosity of the sample: a trigger with a fixed prescale (with ``events`` set,
    the rate is chosen so that ``events`` is the expected total instead). ``lumi.csv`` holds the per-LS table in brilcalc format.
Events (zero-bias-like)
    ``PV_npvs`` ~ Poisson(0.7 ⟨PU⟩); AK4 jets: Poisson(1.5 + 0.04 ⟨PU⟩) jets (≤ 10), pT-ordered
    emissions pT_1 = 30 + Exp(60), pT_(i+1) = 30 + (pT_i − 30) U(0, 1) GeV, η ~ N(0, 1.8) within
    |η| < 4.7, φ uniform; MET a 2-D Gaussian of σ = 0.6 √(HT + 10 ⟨PU⟩) GeV,
    ``MET_significance`` = |MET|²/σ² (χ² with 2 d.o.f.).
Faults (in chosen LS ranges of the BAD runs; ``severity`` s scales each)
    ``hot_tower``     a hot calorimeter tower: with probability min(1, 0.3 s) an event gets an extra
                      jet at a fixed (η0, φ0) ± 0.05, pT = 30 + Exp(50 s) GeV.
    ``met_tail``      MET mis-calibration: MET × (1 + 0.3 s), significance × (1 + 0.5 s), plus a tail:
                      with probability min(1, 0.1 s) an extra Exp(80 s) GeV of MET.
    ``dead_sector``   a dead φ sector of width min(2π, 0.7 s) rad: its jets are lost (their pT shows
                      up as MET).
    ``pileup_spike``  ⟨PU⟩ × (1 + 0.8 s) for the vertices, plus (with probability 1 − exp(−2 s))
                      a soft pile-up jet (pT = 20 + Exp(10) GeV).
    A BAD run has 1–2 faulty LS ranges of 10–40 LS (at most a quarter of the run each, not
    overlapping); there are max(bad_runs, min(2 bad_runs, len(faults))) faults in all and their
    kinds cycle through ``faults``, so every kind is present when 2 bad_runs ≥ len(faults).
Truth
    ``truth.json``: per run GOOD/BAD, fill, LS count, the fault list (kind, LS range, severity and
    parameters) and the GOOD LS ranges in golden-JSON form; ``ls_truth.csv``: one row per (run, LS)
    with the fault kind (``none``), severity, events and luminosity; per event ``truth_label`` (0 good
    LS, else the fault code: hot_tower 1, met_tail 2, dead_sector 3, pileup_spike 4).
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import Any

import numpy as np

import lhcad
from lhcad.config import GenerateDQMConfig
from lhcad.generate.common import (
    OutputDir,
    fileset_entry,
    padded_to_collection,
    primary_vertex,
    rng_for,
    split_counts,
    wrap_phi,
)
from lhcad.generate.lumi import LS_SECONDS, brilcalc_csv
from lhcad.log import progress

log = logging.getLogger(__name__)

FAULT_CODES = {"hot_tower": 1, "met_tail": 2, "dead_sector": 3, "pileup_spike": 4}
FIRST_RUN, FIRST_FILL = 297050, 5839
START_TIME = _dt.datetime(2017, 6, 16, 20, 0, 0)
MAX_JETS = 10
N_SLOTS = MAX_JETS + 2  # room for a hot-tower jet and pile-up jets before truncation


def plan_runs(cfg: GenerateDQMConfig) -> dict[str, Any]:
    """Runs, LS counts, luminosity per LS and the fault plan (all from the seed)."""
    rng = rng_for(cfg.seed, "dqm", 0)
    runs = FIRST_RUN + np.cumsum(np.concatenate([[0], rng.integers(3, 61, cfg.runs - 1)])).astype(int)
    new_fill = np.concatenate([[0], (rng.random(cfg.runs - 1) < 0.5).astype(int)])
    fills = FIRST_FILL + np.cumsum(new_fill)
    n_ls = np.maximum(np.rint(cfg.ls_per_run * rng.uniform(0.7, 1.3, cfg.runs)), 4).astype(int)
    bad = np.zeros(cfg.runs, bool)
    bad[rng.choice(cfg.runs, cfg.bad_runs, replace=False)] = True
    table: dict[str, list] = {k: [] for k in ("run", "fill", "ls", "time", "delivered", "recorded", "avgpu")}
    run_info: dict[str, Any] = {}
    # faults per BAD run: one each, plus extra ones (≤ 2 per run) until every kind can appear
    n_faults_of = np.zeros(cfg.runs, int)
    bad_idx = np.flatnonzero(bad)
    n_faults_of[bad_idx] = 1
    target = min(2 * len(bad_idx), max(len(bad_idx), len(cfg.faults)))
    for k in range(target - len(bad_idx)):
        n_faults_of[bad_idx[k % len(bad_idx)]] += 1
    fault_index = 0
    t0 = START_TIME
    for r, f, nl, is_bad, n_faults in zip(runs, fills, n_ls, bad, n_faults_of, strict=True):
        tau_h = rng.uniform(8.0, 14.0)
        peak = rng.uniform(0.12, 0.40)
        ls = np.arange(1, nl + 1)
        delivered = peak * np.exp(-(ls - 1) * LS_SECONDS / 3600.0 / tau_h) * (1 + 0.01 * rng.standard_normal(nl))
        recorded = delivered * rng.uniform(0.93, 0.99, nl)
        table["run"] += [int(r)] * nl
        table["fill"] += [int(f)] * nl
        table["ls"] += ls.tolist()
        table["time"] += [t0 + _dt.timedelta(seconds=float((i) * LS_SECONDS)) for i in range(nl)]
        table["delivered"] += delivered.tolist()
        table["recorded"] += recorded.tolist()
        table["avgpu"] += (250.0 * delivered).tolist()
        t0 += _dt.timedelta(seconds=float(nl * LS_SECONDS) + 3600 * rng.uniform(1, 6))
        faults = []
        if is_bad and cfg.faults:
            taken = np.zeros(nl + 1, bool)
            for _ in range(n_faults):
                length = int(min(rng.integers(10, 41), max(nl // 4, 1)))
                for _try in range(20):
                    start = int(rng.integers(1, nl - length + 2))
                    if not taken[start:start + length].any():
                        break
                else:
                    continue
                taken[start:start + length] = True
                kind = cfg.faults[fault_index % len(cfg.faults)]
                fault_index += 1
                fault = {"kind": kind, "ls": [start, start + length - 1], "severity": cfg.severity}
                if kind == "hot_tower":
                    fault.update(eta=float(np.round(rng.uniform(-2.5, 2.5), 3)), phi=float(np.round(rng.uniform(-np.pi, np.pi), 3)))
                elif kind == "dead_sector":
                    fault.update(phi_low=float(np.round(rng.uniform(-np.pi, np.pi), 3)),
                                 width=float(min(2 * np.pi, 0.7 * cfg.severity)))
                faults.append(fault)
        faults.sort(key=lambda x: x["ls"][0])
        bad_ls = np.zeros(nl + 1, bool)
        for fl in faults:
            bad_ls[fl["ls"][0]:fl["ls"][1] + 1] = True
        good = _ranges(np.flatnonzero(~bad_ls[1:]) + 1)
        run_info[str(int(r))] = {
            "status": "BAD" if faults else "GOOD", "fill": int(f), "n_ls": int(nl), "faults": faults,
            "good_ls": good, "n_bad_ls": int(bad_ls.sum()),
        }
    return {"table": {k: (np.asarray(v) if k != "time" else v) for k, v in table.items()}, "runs": run_info}


def _ranges(values: np.ndarray) -> list[list[int]]:
    """[[first, last], ...] of the runs of consecutive integers in sorted ``values`` (golden JSON)."""
    if len(values) == 0:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate([[values[0]], values[breaks + 1]])
    ends = np.concatenate([values[breaks], [values[-1]]])
    return [[int(a), int(b)] for a, b in zip(starts, ends, strict=True)]


def _fault_of_ls(plan: dict[str, Any]) -> tuple[np.ndarray, list[dict | None]]:
    """Per LS row of the table: index into a list of faults (−1 none)."""
    t = plan["table"]
    idx = np.full(len(t["ls"]), -1)
    faults: list[dict] = []
    for run, info in plan["runs"].items():
        for fl in info["faults"]:
            sel = (t["run"] == int(run)) & (t["ls"] >= fl["ls"][0]) & (t["ls"] <= fl["ls"][1])
            idx[sel] = len(faults)
            faults.append(fl)
    return idx, faults


def make_events(rng: np.random.Generator, run, ls, pu, fault_idx, faults) -> dict[str, Any]:
    """Events of the given per-event (run, LS, ⟨PU⟩, fault index) as NanoAOD branches."""
    n = len(run)
    nj = np.minimum(rng.poisson(1.5 + 0.04 * pu), MAX_JETS)
    u = rng.random((n, N_SLOTS))
    pt = np.empty((n, N_SLOTS))
    pt[:, 0] = rng.exponential(60.0, n)
    for i in range(1, N_SLOTS):
        pt[:, i] = pt[:, i - 1] * u[:, i]
    pt += 30.0
    eta = np.clip(rng.normal(0, 1.8, (n, N_SLOTS)), -4.7, 4.7)
    phi = rng.uniform(-np.pi, np.pi, (n, N_SLOTS))
    valid = np.arange(N_SLOTS)[None, :] < nj[:, None]
    npv_mean = 0.7 * pu
    met_scale = np.ones(n)
    sig_scale = np.ones(n)
    extra_met = np.zeros((2, n))
    code = np.zeros(n, np.int32)
    for i, fl in enumerate(faults):
        ev = np.flatnonzero(fault_idx == i)
        if not len(ev):
            continue
        s = fl["severity"]
        code[ev] = FAULT_CODES[fl["kind"]]
        if fl["kind"] == "hot_tower":
            hit = ev[rng.random(len(ev)) < min(1.0, 0.3 * s)]
            slot = N_SLOTS - 1  # a free slot (at most MAX_JETS jets are valid before faults)
            pt[hit, slot] = 30.0 + rng.exponential(50.0 * s, len(hit))
            eta[hit, slot] = fl["eta"] + 0.05 * rng.standard_normal(len(hit))
            phi[hit, slot] = wrap_phi(fl["phi"] + 0.05 * rng.standard_normal(len(hit)))
            valid[hit, slot] = True
        elif fl["kind"] == "met_tail":
            met_scale[ev] = 1 + 0.3 * s
            sig_scale[ev] = 1 + 0.5 * s
            tail = ev[rng.random(len(ev)) < min(1.0, 0.1 * s)]
            mag = rng.exponential(80.0 * s, len(tail))
            ang = rng.uniform(-np.pi, np.pi, len(tail))
            extra_met[0, tail] += mag * np.cos(ang)
            extra_met[1, tail] += mag * np.sin(ang)
        elif fl["kind"] == "dead_sector":
            dphi = (phi[ev] - fl["phi_low"]) % (2 * np.pi)
            dead = (dphi < fl["width"]) & valid[ev]
            lost = np.where(dead, pt[ev], 0.0)
            extra_met[0, ev] += (lost * np.cos(phi[ev])).sum(1)  # lost jets -> fake MET along them
            extra_met[1, ev] += (lost * np.sin(phi[ev])).sum(1)
            valid[ev] &= ~dead
        elif fl["kind"] == "pileup_spike":
            npv_mean[ev] = npv_mean[ev] * (1 + 0.8 * s)
            n_soft = np.minimum(rng.poisson(2.0 * s, len(ev)), 1)
            slot = N_SLOTS - 2
            has = ev[n_soft > 0]
            pt[has, slot] = 20.0 + rng.exponential(10.0, len(has))
            valid[has, slot] = True
    ht = np.where(valid, pt, 0.0).sum(1)
    sigma = 0.6 * np.sqrt(ht + 10.0 * pu)
    mex = sigma * rng.standard_normal(n) * met_scale + extra_met[0]
    mey = sigma * rng.standard_normal(n) * met_scale + extra_met[1]
    met = np.hypot(mex, mey)
    jets = {"pt": pt, "eta": eta, "phi": phi, "mass": pt * rng.uniform(0.05, 0.2, (n, N_SLOTS)),
            "btagDeepB": (1.0 - (1.0 - rng.random((n, N_SLOTS))) ** (1 / 12.0)) ** (1 / 0.8),
            "jetId": np.full((n, N_SLOTS), 6.0)}
    jet = padded_to_collection(jets, valid, order_by="pt", dtypes={"jetId": np.int32})
    return {
        "Jet": jet,
        "MET_pt": met.astype(np.float32),
        "MET_phi": np.arctan2(mey, mex).astype(np.float32),
        "MET_significance": ((met / sigma) ** 2 * sig_scale).astype(np.float32),
        **primary_vertex(rng, np.maximum(rng.poisson(npv_mean), 1)),
        "truth_label": code,
        "truth_process": code.copy(),
    }


def generate_dqm(cfg: GenerateDQMConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write the DQM runs into ``out_dir``: NanoAOD, fileset.json, truth.json, ls_truth.csv, lumi.csv."""
    plan = plan_runs(cfg)
    t = plan["table"]
    fault_idx, faults = _fault_of_ls(plan)
    peak = t["delivered"].max()  # a fixed trigger: the event rate follows the absolute luminosity
    rng = rng_for(cfg.seed, "dqm", 1)
    rate = cfg.events_per_ls if cfg.events is None else cfg.events / (t["delivered"] / peak).sum()
    n_ev_ls = rng.poisson(rate * t["delivered"] / peak)
    total = int(n_ev_ls.sum())
    row = np.repeat(np.arange(len(n_ev_ls)), n_ev_ls)  # LS row of every event (ordered by run, LS)
    event_in_run = np.empty(total, np.uint64)
    for r in np.unique(t["run"]):
        sel = t["run"][row] == r
        event_in_run[sel] = np.arange(1, sel.sum() + 1, dtype=np.uint64)
    with OutputDir(out_dir) as out, progress() as bar:
        sizes = split_counts(total, cfg.events_per_file)
        task = bar.add_task("generate dqm", total=len(sizes))
        files, start = [], 0
        for i, n in enumerate(sizes):
            rows = row[start:start + n]
            branches = {
                "run": t["run"][rows].astype(np.uint32),
                "luminosityBlock": t["ls"][rows].astype(np.uint32),
                "event": event_in_run[start:start + n],
                **make_events(rng_for(cfg.seed, "dqm", 10 + i), t["run"][rows], t["ls"][rows],
                              t["avgpu"][rows], fault_idx[rows], faults),
            }
            files.append(out.write_root(f"dqm_{i:03d}.root", branches))
            start += n
            bar.advance(task)
        out.write_text("lumi.csv", brilcalc_csv(t["run"], t["fill"], t["ls"], t["time"], t["delivered"],
                                                t["recorded"], t["avgpu"]))
        kinds = np.array(["none", *[f["kind"] for f in faults]])[fault_idx + 1]
        sev = np.where(fault_idx >= 0, cfg.severity, 0.0)
        lines = ["run,ls,fault,severity,events,delivered_pb,recorded_pb,avgpu"] + [
            f"{r},{s},{k},{v:g},{e},{d:.9f},{c:.9f},{p:.1f}"
            for r, s, k, v, e, d, c, p in zip(t["run"], t["ls"], kinds, sev, n_ev_ls, t["delivered"],
                                              t["recorded"], t["avgpu"], strict=True)
        ]
        out.write_text("ls_truth.csv", "\n".join(lines) + "\n")
        truth = {
            "generator": "lhcad.generate.dqm",
            "lhcad_version": lhcad.__version__,
            "seed": cfg.seed,
            "config": cfg.model_dump(mode="json"),
            "ls_seconds": LS_SECONDS,
            "fault_codes": FAULT_CODES,
            "runs": plan["runs"],
            "n_ls": int(len(t["ls"])),
            "n_bad_ls": int((fault_idx >= 0).sum()),
            "golden_json": {r: info["good_ls"] for r, info in plan["runs"].items()},
            "events_per_ls_at_max_lumi": float(rate),
        "datasets": {"dqm": {"files": [p.name for p in files], "events": total}},
            "lumi_csv": "lumi.csv",
            "ls_truth_csv": "ls_truth.csv",
        }
        out.write_json("fileset.json", {"dqm": fileset_entry(files, {"kind": "dqm", "lumi_csv": str(out.path / "lumi.csv")})})
        out.write_json("truth.json", truth)
    return truth

"""A numpy toy of per-LS monitor-element histograms with injected faults (tests and doc examples).

This is *not* the NanoAOD generator (``lhcad generate dqm``): it draws the per-(run, LS) histograms
directly, in the LumiProcessor's store layout, so the DQM procedure can be tested in isolation and fast.
Events per LS follow a decaying instantaneous-luminosity profile; the four fault kinds change the MEs
the way the detector faults do:

==============  ===========================================================================
hot_tower       Jet_phi: extra entries in one φ bin
met_tail        MET_significance: a fraction of events moved to a harder exponential tail
dead_sector     Jet_phi: entries missing in a block of φ bins
pileup_spike    PV_npvs: the mean number of vertices jumps up
==============  ===========================================================================

``truth`` = ``{"runs": {run: {"status": "GOOD"|"BAD", "faults": {ls: kind}}}}``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import zarr

from lhcad.dqm.data import write_me

FAULT_KINDS = ("hot_tower", "met_tail", "dead_sector", "pileup_spike")
LS_SECONDS = 23.31


def _axes(name: str, bins: int, lo: float, hi: float) -> list:
    return [{"type": "regular", "lower": lo, "upper": hi, "bins": bins, "underflow": False,
             "overflow": False, "circular": False, "metadata": {"name": name, "label": name}}]


ME_AXES = {
    "MET_significance": _axes("MET_significance", 30, 0.0, 15.0),
    "Jet_phi": _axes("Jet_phi", 24, -np.pi, np.pi),
    "PV_npvs": _axes("PV_npvs", 40, 0.0, 80.0),
}


def make_runs(
    root: zarr.Group,
    runs: list[int],
    *,
    bad: dict[int, dict[int, str]] | None = None,
    ls_per_run: int = 200,
    events_per_ls: float = 400.0,
    severity: float = 1.0,
    low_stats_ls: dict[int, list[int]] | None = None,
    seed: int = 0,
) -> dict:
    """Write the three toy MEs for ``runs`` into ``root/lumi``; ``bad[run] = {ls: kind}``; returns truth."""
    rng = np.random.default_rng(seed)
    bad = bad or {}
    low_stats_ls = low_stats_ls or {}
    per_me: dict[str, list] = {me: [] for me in ME_AXES}
    run_col, ls_col, n_events, pileup = [], [], [], []
    truth: dict = {"runs": {}}
    for run in runs:
        ls = np.arange(1, ls_per_run + 1)
        profile = np.exp(-ls / (2.5 * ls_per_run))  # decaying instantaneous luminosity
        n = rng.poisson(events_per_ls * profile / profile.mean())
        for l in low_stats_ls.get(run, []):
            n[l - 1] = rng.integers(0, 5)
        faults = {int(k): v for k, v in bad.get(run, {}).items()}
        truth["runs"][str(run)] = {"status": "BAD" if faults else "GOOD",
                                   "faults": {str(k): v for k, v in faults.items()}}
        for i, l in enumerate(ls):
            kind = faults.get(int(l))
            mu_pu = 30.0 * profile[i] / profile.mean()
            pileup.append(mu_pu)
            # MET significance: exponential core, (met_tail) a harder tail
            m = rng.exponential(1.5, n[i])
            if kind == "met_tail":
                tail = rng.random(n[i]) < 0.15 * severity
                m[tail] = rng.exponential(6.0, tail.sum())
            per_me["MET_significance"].append(np.histogram(m, 30, (0, 15))[0])
            # jets: ~3 per event, flat in phi
            nj = rng.poisson(3.0 * n[i])
            phi = rng.uniform(-np.pi, np.pi, nj)
            if kind == "dead_sector":
                dead = (phi > 0.5) & (phi < 0.5 + 0.8 * severity)
                phi = phi[~dead | (rng.random(nj) < 0.1)]
            if kind == "hot_tower":
                phi = np.concatenate([phi, np.full(rng.poisson(0.25 * severity * n[i]), -1.9)])
            per_me["Jet_phi"].append(np.histogram(phi, 24, (-np.pi, np.pi))[0])
            pu = rng.poisson(mu_pu * (1.5 ** severity if kind == "pileup_spike" else 1.0), n[i]) * 0.7
            per_me["PV_npvs"].append(np.histogram(pu, 40, (0, 80))[0])
        run_col.append(np.full(len(ls), run))
        ls_col.append(ls)
        n_events.append(n)
    run_a, ls_a = np.concatenate(run_col), np.concatenate(ls_col)
    for me, rows in per_me.items():
        write_me(root, me, np.asarray(rows, dtype=np.float64), run_a, ls_a, ME_AXES[me])
    truth["n_events"] = np.concatenate(n_events).tolist()
    truth["avgpu"] = pileup  # per LS, in (run, LS) order
    return truth


def write_brilcalc_csv(path: str | Path, run: np.ndarray, lumi: np.ndarray, recorded_pb: np.ndarray,
                       avgpu: np.ndarray | None = None, fill: int = 5000) -> Path:
    """Write a per-LS brilcalc CSV (``--byls --output-style csv -u /pb``) for (run, LS) pairs."""
    path = Path(path)
    t0 = _dt.datetime(2017, 6, 16, 20, 0, 0)
    lines = ["#Data tag : lhcad-toy , Norm tag: None",
             "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source"]
    avgpu = np.full(len(run), 30.0) if avgpu is None else np.asarray(avgpu)
    for i, (r, l, rec, pu) in enumerate(zip(run, lumi, recorded_pb, avgpu)):
        t = (t0 + _dt.timedelta(seconds=LS_SECONDS * i)).strftime("%m/%d/%y %H:%M:%S")
        lines.append(f"{int(r)}:{fill},{int(l)}:{int(l)},{t},STABLE BEAMS,6500,{rec * 1.03:.9f},{rec:.9f},{pu:.3f},HFET")
    lines.append(f"#Summary: {len(lines) - 2} LS")
    path.write_text("\n".join(lines) + "\n")
    return path

"""Compare a certification with the generator's per-LS fault truth (benchmarks, ``lhcad run``).

Truth (``truth.json`` of ``lhcad generate dqm``, or :mod:`lhcad.dqm.toy`) is read into a
:class:`Truth`: per run whether it is BAD and which LSs are faulty with which kind.

Figures: ``ls_recall`` (fraction of truly faulty LSs flagged) overall and per fault kind;
``ls_false_flag_rate`` (fraction of LSs of GOOD runs flagged, outside the reference runs the models
learnt from, with its binomial 68 % interval and 95 % upper bound and the number of LSs); ``true_recoverable_lumi_pb`` (luminosity of the fault-free LSs of BAD runs) vs
``recovered_lumi_pb``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Truth:
    bad_runs: set[int] = field(default_factory=set)
    good_runs: set[int] = field(default_factory=set)
    faults: dict[tuple[int, int], str] = field(default_factory=dict)  # (run, ls) -> kind

    def kind_of(self, run: np.ndarray, lumi: np.ndarray) -> np.ndarray:
        return np.array([self.faults.get((int(r), int(ls)), "") for r, ls in zip(run, lumi)], dtype=object)


def _faults_of(entry) -> dict[int, str]:
    """Fault LSs of one run's truth entry, accepting {ls: kind}, [{ls, kind}], [[first, last, kind]]."""
    f = entry.get("faults", entry.get("faulty_ls", entry.get("bad_ls", {}))) if isinstance(entry, dict) else entry
    out: dict[int, str] = {}
    if isinstance(f, dict):
        for ls, kind in f.items():
            out[int(ls)] = kind if isinstance(kind, str) else str(kind.get("kind", kind))
    elif isinstance(f, list):
        for item in f:
            if isinstance(item, dict):
                kind = str(item.get("kind", item.get("fault", "fault")))
                if isinstance(item.get("ls"), list | tuple):  # lhcad generate dqm: "ls": [first, last]
                    for ls in range(int(item["ls"][0]), int(item["ls"][-1]) + 1):
                        out[ls] = kind
                elif "ls" in item:
                    out[int(item["ls"])] = kind
                else:
                    for ls in range(int(item.get("first", item.get("ls_first"))), int(item.get("last", item.get("ls_last"))) + 1):
                        out[ls] = kind
            elif isinstance(item, list | tuple):
                for ls in range(int(item[0]), int(item[1]) + 1):
                    out[ls] = str(item[2]) if len(item) > 2 else "fault"
            else:
                out[int(item)] = "fault"
    return out


def read_truth(source: str | Path | dict) -> Truth:
    data = json.loads(Path(source).read_text()) if not isinstance(source, dict) else source
    runs = data.get("runs", data)
    if isinstance(runs, list):
        runs = {str(e["run"]): e for e in runs}
    t = Truth()
    for run, entry in runs.items():
        faults = _faults_of(entry)
        status = str(entry.get("status", entry.get("verdict", ""))).upper() if isinstance(entry, dict) else ""
        bad = bool(faults) or status == "BAD" or (isinstance(entry, dict) and entry.get("bad") is True)
        (t.bad_runs if bad else t.good_runs).add(int(run))
        for ls, kind in faults.items():
            t.faults[(int(run), ls)] = kind
    return t


def evaluate(table: dict, truth: Truth, reference_runs=(), lumidata=None) -> dict:
    """Recall per fault kind, false-flag rate on GOOD runs, recovered vs recoverable luminosity."""
    run, lumi = np.asarray(table["run"]), np.asarray(table["lumi"])
    flagged, certified = np.asarray(table["flagged"]), np.asarray(table["certified"])
    kind = truth.kind_of(run, lumi)
    faulty = kind != ""
    out: dict = {"ls_recall": float(flagged[faulty].mean()) if faulty.any() else None,
                 "n_faulty_ls": int(faulty.sum()), "ls_recall_per_kind": {}, "n_faulty_ls_per_kind": {}}
    for k in sorted(set(kind[faulty])):
        sel = kind == k
        out["ls_recall_per_kind"][k] = float(flagged[sel].mean())
        out["n_faulty_ls_per_kind"][k] = int(sel.sum())
    good = np.isin(run, sorted(truth.good_runs)) & ~np.isin(run, list(reference_runs))
    out["n_good_ls_tested"] = int(good.sum())
    out["n_good_ls_flagged"] = int(flagged[good].sum())
    out["ls_false_flag_rate"] = float(flagged[good].mean()) if good.any() else None
    if good.any():
        out.update(rate_interval(out["n_good_ls_flagged"], out["n_good_ls_tested"], "ls_false_flag_rate"))
        out["false_flags_per_run"] = {str(int(r)): int(flagged[good & (run == r)].sum())
                                      for r in np.unique(run[good]) if flagged[good & (run == r)].any()}
    bad_run_rows = np.isin(run, sorted(truth.bad_runs))
    clean_bad = bad_run_rows & ~faulty
    out["clean_ls_of_bad_runs_flagged"] = float(flagged[clean_bad].mean()) if clean_bad.any() else None
    out["faulty_ls_certified"] = int((certified & faulty).sum())
    if lumidata is not None:
        from lhcad.dqm.lumi import lumi_of

        out["true_recoverable_lumi_pb"] = lumi_of(lumidata, run[clean_bad], lumi[clean_bad])
        rec = bad_run_rows & certified
        out["recovered_lumi_bad_runs_pb"] = lumi_of(lumidata, run[rec], lumi[rec])
    return out


def rate_interval(k: int, n: int, name: str) -> dict:
    """Binomial (Clopper-Pearson) uncertainty of a rate ``k / n``: the central 68 % interval and the
    one-sided 95 % upper bound (0 of 3000 gives an upper bound of 1.0e-3).

    >>> d = rate_interval(0, 2995, "r"); round(d["r_upper95"], 5)
    0.001
    """
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.68, method="exact")
    up = binomtest(k, n, alternative="less").proportion_ci(0.95, method="exact").high
    return {f"{name}_ci68": [float(ci.low), float(ci.high)], f"{name}_upper95": float(up)}


def spread_reference(good_runs, lumidata) -> list[int]:
    """Every other GOOD run, ordered by mean pile-up: the reference spans the pile-up range and the
    GOOD runs left out (to measure the false-flag rate) lie inside it."""
    d = lumidata._lumidata
    pu = {int(r): float(d[d[:, 0] == r, 3].mean()) if (d[:, 0] == r).any() else 0.0 for r in good_runs}
    ordered = sorted(good_runs, key=lambda r: pu[int(r)])
    chosen = ordered[::2]
    if len(ordered) > 2 and ordered[-1] not in chosen:
        chosen.append(ordered[-1])  # keep the highest pile-up run in the reference too
    return sorted(int(r) for r in chosen)

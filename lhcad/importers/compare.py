"""Compare two ``dijet/`` tables event by event: the check behind the LHCO round trip.

The same generated events reach the store by two paths: NanoAOD → ``lhcad process dijet`` and
LHCO-format h5 (``lhcad generate dijet --lhco-h5``) → ``lhcad import lhco --preselect``. The LHCO
format has no event ids, so the importer stores the row index in the file as ``event``; the generator
numbers the events of a dataset from 1, the rows of its h5 file from 0. Events are therefore joined
on (dataset name, ``event``) with ``event_offset`` = reference event − other event (1 here).

Columns are compared where both are finite; a column the other store cannot fill (NaN throughout,
e.g. ``msoftdrop`` for LHCO files) is listed, not compared. ``run`` / ``luminosityBlock`` / ``event``
are synthesised by the importer and are not compared. A float column agrees "to float32 precision"
when ``|a − b| ≤ ulps · ε₃₂ · scale`` with ε₃₂ = 2⁻²³ and ``scale`` the magnitude of the value or,
for a difference of two stored columns (``delta_m``, ``delta_eta``), of its operands.

>>> report = compare_dijet_stores("processed.zarr", "imported.zarr", event_offset=1)  # doctest: +SKIP
>>> report["equal"], report["matched"], report["only_reference"], report["only_other"]  # doctest: +SKIP
(True, 25986, 0, 0)
"""

from __future__ import annotations

import numpy as np

from lhcad import store as _store

EPS32 = float(np.finfo(np.float32).eps)
SYNTHESISED = ("run", "luminosityBlock", "event")
#: columns that are differences of two stored columns: their rounding error scales with the operands
_OPERANDS = {"delta_m": ("mj1", "mj2"), "delta_eta": ("j1_eta", "j2_eta")}


def _keys(cols: dict, names: list[str], event_offset: int) -> np.ndarray:
    """One int64 key per row: (dataset name index in ``names``, event + offset)."""
    ds = np.asarray([names.index(n) for n in cols["_dataset_names"]], dtype=np.int64)[cols["dataset"]]
    ev = np.asarray(cols["event"], dtype=np.int64) + event_offset
    if ev.size and (ev.min() < 0 or ev.max() >= 1 << 40):
        raise ValueError("event numbers outside [0, 2^40) cannot be joined")
    return ds << 40 | ev


def _read(store, columns) -> dict:
    cols = _store.read_columns(store, "dijet", list(columns))
    cols["_dataset_names"] = _store.dataset_names(store, "dijet")
    return cols


def compare_dijet_stores(reference, other, event_offset: int = 0, ulps: float = 4.0,
                         columns: tuple[str, ...] = _store.DIJET_COLUMNS) -> dict:
    """Event-by-event comparison of ``dijet/`` in two stores (paths or open groups).

    Returns ``{"rows": [n_ref, n_other], "matched", "only_reference", "only_other",
    "examples_only_reference", "examples_only_other" (up to 5 (dataset, event) each), "aligned"
    (the matched events sit at the same row positions, so row-indexed fold splits agree),
    "columns": {name: {"max_abs", "max_ulps", "bad"}}, "not_in_other": [names], "features_equal",
    "equal"}``; ``features_equal``: every compared column of the matched events agrees to ``ulps``
    float32 units; ``equal``: that, and both hold the same events in the same rows.
    """
    a, b = _read(reference, columns), _read(other, columns)
    names = sorted(set(a["_dataset_names"]) | set(b["_dataset_names"]))
    ka, kb = _keys(a, names, 0), _keys(b, names, event_offset)
    if len(np.unique(ka)) != len(ka) or len(np.unique(kb)) != len(kb):
        raise ValueError("(dataset, event) is not unique in one of the stores; cannot join")
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    order = np.argsort(ia)
    ia, ib = ia[order], ib[order]

    def examples(keys, mask):
        sel = keys[mask][:5]
        return [(names[int(k >> 40)], int(k & ((1 << 40) - 1))) for k in sel]

    only_a = ~np.isin(ka, common, assume_unique=True)
    only_b = ~np.isin(kb, common, assume_unique=True)
    report: dict = {
        "rows": [len(ka), len(kb)], "matched": len(common),
        "only_reference": int(only_a.sum()), "only_other": int(only_b.sum()),
        "examples_only_reference": examples(ka, only_a), "examples_only_other": examples(kb, only_b),
        "aligned": bool(len(ka) == len(kb) == len(common) and np.array_equal(ia, ib)),
        "columns": {}, "not_in_other": [],
    }
    ok = True
    for name in columns:
        if name in SYNTHESISED:
            continue
        if name == "dataset":
            same = np.array(a["_dataset_names"])[a["dataset"][ia]] == np.array(b["_dataset_names"])[b["dataset"][ib]]
            report["columns"][name] = {"bad": int((~same).sum())}
            ok &= bool(same.all())
            continue
        va = np.asarray(a[name][ia], dtype=np.float64)
        vb = np.asarray(b[name][ib], dtype=np.float64)
        if len(vb) and not np.isfinite(vb).any() and np.isfinite(va).any():
            report["not_in_other"].append(name)
            continue
        fa, fb = np.isfinite(va), np.isfinite(vb)
        both = fa & fb
        if name in _OPERANDS:
            scale = np.maximum.reduce([np.abs(np.asarray(a[c][ia], np.float64)) for c in _OPERANDS[name]])
        else:
            scale = np.maximum(np.abs(va), np.abs(vb))
        diff = np.abs(va - vb)
        units = np.where(both, diff / np.maximum(EPS32 * scale, np.finfo(np.float64).tiny), 0.0)
        bad = (fa != fb) | (both & (units > ulps))
        report["columns"][name] = {
            "max_abs": float(diff[both].max()) if both.any() else 0.0,
            "max_ulps": float(units.max()) if len(units) else 0.0,
            "bad": int(bad.sum()),
        }
        ok &= not bad.any()
    report["features_equal"] = bool(ok)
    report["equal"] = bool(ok and report["aligned"])
    return report

"""Tiny NanoAOD-format files with the generator's branch contract, for tests and smoke runs.

The real synthetic samples come from :mod:`lhcad.generate`; this writes a few thousand simple events
(no physics model beyond "two hard AK8 jets, some leptons") with exactly the branches and types of the
contract in CONTRIBUTING.md, using ``uproot``'s ``mktree`` with ``ak.zip`` collections so that the
``n<Coll>`` counters exist.

>>> path = write_nanoaod("/tmp/lhcad-doctest.root", 100, seed=1)   # doctest: +SKIP
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot


def _collection(rng: np.random.Generator, counts: np.ndarray, fields: dict) -> ak.Array:
    n = int(counts.sum())
    flat = {name: fn(rng, n) for name, fn in fields.items()}
    return ak.zip({k: ak.unflatten(v, counts) for k, v in flat.items()})


def _sorted_pt(arr: ak.Array) -> ak.Array:
    return arr[ak.argsort(arr.pt, ascending=False)]


def nanoaod_arrays(n: int, seed: int = 0, *, run: int = 1, events_per_ls: int = 50,
                   drop: tuple[str, ...] = (), truth: bool = True) -> dict:
    """Branches of ``n`` events (``drop``: branch names such as ``"FatJet_lsf3"`` to leave out)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    nfj = rng.integers(0, 4, n)
    fat = _sorted_pt(_collection(rng, nfj, {
        "pt": lambda r, k: (200 + r.exponential(300, k)).astype(f32),
        "eta": lambda r, k: r.uniform(-2.8, 2.8, k).astype(f32),
        "phi": lambda r, k: r.uniform(-np.pi, np.pi, k).astype(f32),
        "mass": lambda r, k: r.uniform(10, 600, k).astype(f32),
        "msoftdrop": lambda r, k: r.uniform(0, 500, k).astype(f32),
        "tau1": lambda r, k: r.uniform(0.05, 0.5, k).astype(f32),
        "tau2": lambda r, k: r.uniform(0.02, 0.4, k).astype(f32),
        "tau3": lambda r, k: r.uniform(0.01, 0.3, k).astype(f32),
        "tau4": lambda r, k: r.uniform(0.01, 0.2, k).astype(f32),
        "nConstituents": lambda r, k: r.integers(10, 120, k).astype(np.uint8),
        "lsf3": lambda r, k: r.uniform(0, 1, k).astype(f32),
        "btagDeepB": lambda r, k: r.uniform(0, 1, k).astype(f32),
        "jetId": lambda r, k: r.choice(np.array([0, 2, 6], np.int32), k, p=[0.05, 0.15, 0.8]),
    }))
    jets = _sorted_pt(_collection(rng, rng.integers(0, 12, n), {
        "pt": lambda r, k: (20 + r.exponential(60, k)).astype(f32),
        "eta": lambda r, k: r.uniform(-4.7, 4.7, k).astype(f32),
        "phi": lambda r, k: r.uniform(-np.pi, np.pi, k).astype(f32),
        "mass": lambda r, k: r.uniform(0, 30, k).astype(f32),
        "btagDeepB": lambda r, k: r.uniform(0, 1, k).astype(f32),
        "jetId": lambda r, k: np.full(k, 6, np.int32),
    }))
    lep = {
        "pt": lambda r, k: (5 + r.exponential(25, k)).astype(f32),
        "eta": lambda r, k: r.uniform(-2.5, 2.5, k).astype(f32),
        "phi": lambda r, k: r.uniform(-np.pi, np.pi, k).astype(f32),
        "mass": lambda r, k: np.full(k, 0.000511, f32),
        "charge": lambda r, k: r.choice(np.array([-1, 1], np.int32), k),
    }
    ele = _sorted_pt(_collection(rng, rng.integers(0, 6, n) * (rng.random(n) < 0.4), lep))
    muo = _sorted_pt(_collection(rng, rng.integers(0, 6, n) * (rng.random(n) < 0.4), lep))
    out = {
        "run": np.full(n, run, np.uint32),
        "luminosityBlock": (1 + np.arange(n) // events_per_ls).astype(np.uint32),
        "event": np.arange(1, n + 1, dtype=np.uint64) + np.uint64(seed * 10_000_000),
        "FatJet": fat,
        "Jet": jets,
        "Electron": ele,
        "Muon": muo,
        "MET": ak.zip({"pt": rng.exponential(40, n).astype(f32), "phi": rng.uniform(-np.pi, np.pi, n).astype(f32),
                       "significance": rng.exponential(2, n).astype(f32)}),
        "PV_npvs": rng.poisson(30, n).astype(np.int32),
    }
    if truth:
        out["truth_label"] = (rng.random(n) < 0.1).astype(np.int32)
        out["truth_process"] = out["truth_label"].copy()
    for name in drop:
        coll, _, field = name.partition("_")
        if field and coll in out and isinstance(out[coll], ak.Array) and field in out[coll].fields:
            out[coll] = out[coll][[f for f in out[coll].fields if f != field]]
        elif name in out:
            del out[name]
        else:
            raise KeyError(f"cannot drop {name!r}: not a branch of the sample")
    return out


def write_nanoaod(path, n: int, seed: int = 0, *, treename: str = "Events", **kwargs) -> str:
    """Write ``n`` events to ``path`` (a TTree ``Events``); returns the path as a string."""
    arrays = nanoaod_arrays(n, seed, **kwargs)
    with uproot.recreate(path) as fout:
        # MET is a singleton record: write its fields as flat MET_* branches (no nMET counter).
        met = arrays.pop("MET", None)
        if met is not None:
            for field in met.fields:
                arrays[f"MET_{field}"] = ak.to_numpy(met[field])
        fout.mktree(treename, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in arrays.items()})
        fout[treename].extend(arrays)
    return str(path)

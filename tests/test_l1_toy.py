"""Toy L1 stores for the L1 and deploy tests (small, seeded, written with ``lhcad.store``).

Background ("sm"): one lepton (W→ℓν-like, pT ~ 15 + Exp(15) GeV), MET ~ 10 + Exp(20) GeV and 0–4
soft jets; signals with the ADC2021 names differ in the documented ways: ``ato4l`` 3–4 soft leptons,
``lq_btau`` two hard jets + a lepton, ``h0_tautau`` two leptons + moderate MET, ``hch_taunu`` one
lepton + large MET. ``blackbox`` is 99 % background + 1 % ``ato4l``.
"""

from __future__ import annotations

import numpy as np

from lhcad.store import L1_SLICES, append_columns, dataset_code, open_store


def _events(rng, n, n_lep, met_scale, jets, jet_scale, lep_scale=15.0):
    p = np.zeros((n, 19, 3), np.float32)
    p[:, 0, 0] = 10 + rng.exponential(met_scale, n)
    p[:, 0, 2] = rng.uniform(-np.pi, np.pi, n)
    for i in range(n):
        nl = n_lep if np.isscalar(n_lep) else rng.integers(*n_lep)
        kind = rng.integers(0, 2)
        sl = L1_SLICES["electron" if kind == 0 else "muon"]
        pts = np.sort(15 + rng.exponential(lep_scale, nl))[::-1]
        p[i, sl.start:sl.start + nl, 0] = pts
        p[i, sl.start:sl.start + nl, 1] = rng.uniform(-2.0, 2.0, nl)
        p[i, sl.start:sl.start + nl, 2] = rng.uniform(-np.pi, np.pi, nl)
        nj = rng.integers(*jets)
        jp = np.sort(20 + rng.exponential(jet_scale, nj))[::-1]
        j0 = L1_SLICES["jet"].start
        p[i, j0:j0 + nj, 0] = jp
        p[i, j0:j0 + nj, 1] = rng.uniform(-3.5, 3.5, nj)
        p[i, j0:j0 + nj, 2] = rng.uniform(-np.pi, np.pi, nj)
    return p


SPECS = {
    "sm": dict(n_lep=1, met_scale=20.0, jets=(0, 4), jet_scale=15.0),
    "ato4l": dict(n_lep=(3, 5), met_scale=10.0, jets=(0, 2), jet_scale=10.0, lep_scale=8.0),
    "lq_btau": dict(n_lep=1, met_scale=30.0, jets=(2, 4), jet_scale=80.0),
    "h0_tautau": dict(n_lep=2, met_scale=40.0, jets=(0, 3), jet_scale=15.0),
    "hch_taunu": dict(n_lep=1, met_scale=90.0, jets=(0, 3), jet_scale=15.0),
}


def toy_particles(name: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, list(SPECS).index(name)])
    return _events(rng, n, **SPECS[name])


def toy_store(path, n_bkg: int = 20_000, n_sig: int = 2_000, seed: int = 0, blackbox: int = 2_000) -> str:
    """Write a toy ``l1/`` table at ``path``; returns the path."""
    root = open_store(str(path), mode="w")
    for name in SPECS:
        n = n_bkg if name == "sm" else n_sig
        p = toy_particles(name, n, seed)
        append_columns(root, "l1", {"particles": p, "dataset": np.full(n, dataset_code(root, "l1", name), np.int64),
                                    "truth_label": np.full(n, 0 if name == "sm" else 1 + list(SPECS).index(name) - 1, np.int32)})
    if blackbox:
        rng = np.random.default_rng(seed + 99)
        n_s = blackbox // 100
        p = np.concatenate([toy_particles("sm", blackbox - n_s, seed + 7), toy_particles("ato4l", n_s, seed + 7)])
        truth = np.r_[np.zeros(blackbox - n_s), np.ones(n_s)].astype(np.int32)
        order = rng.permutation(blackbox)
        append_columns(root, "l1", {"particles": p[order], "dataset": np.full(blackbox, dataset_code(root, "l1", "blackbox"), np.int64),
                                    "truth_label": truth[order]})
    return str(path)


def test_toy_store_layout(tmp_path):
    from lhcad.models.l1_preprocess import load_l1

    path = toy_store(tmp_path / "s.zarr", n_bkg=500, n_sig=50, blackbox=200)
    d = load_l1(path)
    assert d["particles"].shape == (500 + 4 * 50 + 200, 19, 3)
    sig = load_l1(path, ["ato4l"])
    assert set(sig["dataset_name"]) == {"ato4l"} and len(sig["particles"]) == 50
    # ato4l events carry at least 3 leptons, the background exactly one
    lep = slice(1, 9)
    assert ((sig["particles"][:, lep, 0] > 0).sum(1) >= 3).all()
    assert ((load_l1(path, ["sm"])["particles"][:, lep, 0] > 0).sum(1) == 1).all()

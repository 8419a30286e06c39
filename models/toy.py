"""A Gaussian-bump toy of the dijet table with known truth, for tests and examples.

Background: falling m_jj, jet masses and Δm mildly correlated with m_jj, τ21 ~ Beta(5, 3).
Signal: a resonance at ``m_res`` (width 5 %) with mj1 ≈ 100 GeV, Δm ≈ 400 GeV and low τ21.
Datasets ``data`` (background + signal at ``s_over_b`` inside the SR), ``extra_bkg`` (SR-only
background) and ``test`` (labelled SR background + signal) are written with
:func:`lhcad.store.append_columns`, exactly like the processors' ``dijet/`` table.
"""

from __future__ import annotations

import numpy as np

from lhcad import store as _store


def _background(rng, n: int, m_range=(2500.0, 6000.0)):
    mjj = m_range[0] + rng.exponential(600.0, size=4 * n)
    mjj = mjj[mjj < m_range[1]][:n]
    mj1 = 30 + rng.exponential(60.0, n) + 0.02 * (mjj - 3000)
    dm = rng.exponential(120.0, n) + 0.03 * (mjj - 3000)
    return {"mjj": mjj, "mj1": np.abs(mj1), "delta_m": np.abs(dm),
            "tau21_j1": rng.beta(5, 3, n), "tau21_j2": rng.beta(5, 3, n)}


def _signal(rng, n: int, m_res: float):
    return {"mjj": rng.normal(m_res, 0.05 * m_res, n), "mj1": rng.normal(100, 10, n),
            "delta_m": rng.normal(400, 30, n), "tau21_j1": rng.beta(2, 6, n), "tau21_j2": rng.beta(2, 6, n)}


def _concat(parts):
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def make_toy_store(path: str, n_background: int = 40_000, s_over_b: float = 0.05,
                   sr=(3300.0, 3700.0), n_extra: int = 10_000, n_test_bkg: int = 10_000,
                   n_test_sig: int = 2_000, m_res: float = 3500.0, seed: int = 0) -> dict:
    """Write a toy ``dijet/`` table into a new store at ``path``; returns the truth numbers."""
    rng = np.random.default_rng(seed)
    root = _store.open_store(path, mode="w")
    bkg = _background(rng, n_background)
    n_sr = int(((bkg["mjj"] >= sr[0]) & (bkg["mjj"] < sr[1])).sum())
    # signal events so that S/B inside the SR is s_over_b (the signal's SR efficiency included)
    sig_eff = float(np.mean(np.abs(rng.normal(0, 0.05 * m_res, 100_000)) < (sr[1] - sr[0]) / 2))
    n_sig = int(round(s_over_b * n_sr / sig_eff))
    data = _concat([bkg, _signal(rng, n_sig, m_res)]) if n_sig else bkg
    truth = np.r_[np.zeros(len(bkg["mjj"]), int), np.ones(n_sig, int)]
    order = rng.permutation(len(truth))
    parts = [("data", {k: v[order] for k, v in data.items()}, truth[order])]
    if n_extra:
        extra = _background(rng, 20 * n_extra)
        sel = (extra["mjj"] >= sr[0]) & (extra["mjj"] < sr[1])
        parts.append(("extra_bkg", {k: v[sel][:n_extra] for k, v in extra.items()},
                      np.zeros(min(n_extra, int(sel.sum())), int)))
    if n_test_bkg:
        tb = _background(rng, 20 * n_test_bkg)
        sel = (tb["mjj"] >= sr[0]) & (tb["mjj"] < sr[1])
        tb = {k: v[sel][:n_test_bkg] for k, v in tb.items()}
        ts = _signal(rng, 3 * n_test_sig, m_res)
        sel = (ts["mjj"] >= sr[0]) & (ts["mjj"] < sr[1])
        ts = {k: v[sel][:n_test_sig] for k, v in ts.items()}
        parts.append(("test", _concat([tb, ts]),
                      np.r_[np.zeros(len(tb["mjj"]), int), np.ones(len(ts["mjj"]), int)]))
    for name, cols, lab in parts:
        n = len(lab)
        code = _store.dataset_code(root, "dijet", name)
        row = {c: np.zeros(n, np.float32) for c in _store.DIJET_COLUMNS}
        row.update({k: v.astype(np.float32) for k, v in cols.items()})
        row["mj2"] = (cols["mj1"] + cols["delta_m"]).astype(np.float32)
        row["dataset"] = np.full(n, code, np.int8)
        row["truth_label"] = lab.astype(np.int8)
        row["weight"] = np.ones(n, np.float32)
        _store.append_columns(root, "dijet", row)
    return {"n_sr_background": n_sr, "n_signal": n_sig, "s_over_b": n_sig * sig_eff / max(n_sr, 1)}

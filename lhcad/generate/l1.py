"""ADC2021-like L1 trigger events as NanoAOD: a Standard-Model mixture, four BSM signals, a black box.

All processes are built from exact (vectorised) two-body decays and boosts; every event passes the
ADC2021 preselection: at least one electron or muon with pT > 23 GeV (rejection sampling in blocks).
Object acceptance follows ADC2021: electrons pT > 3 GeV, |η| < 3; muons pT > 3 GeV, |η| < 2.1; jets
pT > 15 GeV, |η| < 4. The NanoAOD collections are pT-ordered; the ADC2021 h5 layout keeps the 4
leading electrons, 4 leading muons and 10 leading jets.

Events whose true leptons are all below 23 GeV / 1.25 are dropped before the detector step (they
cannot pass after the 2 % / 1.5 % lepton pT smearing), which leaves the accepted sample unchanged.

Standard-Model mixture (fractions of the ADC2021 background after the lepton trigger)
    W → ℓν 59.2 %: m_W Breit-Wigner(80.4, 2.1), pT(W) ~ Exp(12 GeV), y ~ N(0, 1.5); the Jacobian
        peak puts the lepton at ≈ 40 GeV and the neutrino in MET.
    Z → ℓℓ 6.7 %: m_Z Breit-Wigner(91.2, 2.5), same production model; two opposite-charge leptons.
    tt̄ 0.3 %: top pT ~ Exp(90 GeV), t → bW, one W → ℓν and one W → qq: 4 jets (2 b-tagged), lepton,
        MET.
    QCD multijet 33.8 %: 2–4 jets (pT = 20 + Exp(35) GeV) and a non-isolated lepton from heavy-flavour
        decay or a fake (pT = 20 + Exp(8) GeV, within ΔR 0.3 of the leading jet), little MET.
    Every process: initial-state radiation jets Poisson(0.8) with pT = 15 + Exp(25) GeV, plus pile-up
    jets Poisson(1.5) with pT = 15 + Exp(6) GeV and |η| < 4; MET resolution σ = 0.5 √HT + 5 GeV.
BSM signals (the ADC2021 benchmarks of Govorkova et al., Sci. Data 2022, doi:10.1038/s41597-022-01187-8,
first used by Cerri et al., arXiv:1811.10276; masses as there; truth_label 1..4). The samples' production modes
are not spelled out in the dataset record; each is modelled by the dominant LHC production of such a
particle:
    ``ato4l`` A(50 GeV) → 4ℓ: A → V1 V2 (m1 ~ U(12, 30), m2 ~ U(4, min(m1, 49 − m1))), V → ℓℓ (e or
        μ): ≥ 3 leptons in most events, soft leptons, little MET. A: pT ~ Exp(30 GeV), y ~ N(0, 1.2).
    ``lq_btau`` LQ(80 GeV) → bτ: a coloured scalar this light is produced in pairs by QCD (gg, qq̄ →
        LQ LQ̄; independent of its Yukawa coupling, unlike single production), so every event has two
        b jets and two τ; pair mass 2 m_LQ + Gamma(2, 35 GeV), pair pT ~ Exp(25 GeV) balanced by an
        ISR jet. About 15 % pass the lepton trigger.
    ``h0_tautau`` h0(60 GeV) → ττ: gluon fusion; pT(h0) ~ Gamma(1.6, 18 GeV) (mean 29 GeV) balanced
        by an ISR recoil jet, y ~ N(0, 1.8). Only boosted h0 give a lepton above 23 GeV (≈ 5 %), so the
        accepted events carry a hard recoil jet.
    ``hch_taunu`` h±(60 GeV) → τν: a charged scalar lighter than the top quark is produced in top
        decays (the mode of the LHC light-H± searches): tt̄ → (b h±)(b W∓), h± → τν, W → ℓν / τν / qq̄′
        (PDG fractions); top-pair kinematics as in the SM tt̄ process. Two b jets, more MET than tt̄.
    τ decays: leptonic (e, μ; B = 35.2 %) with the lepton momentum fraction from the V−A spectrum
    dN/dx = (5 − 9x² + 4x³)/3 (collinear, unpolarised; mean 0.35), or hadronic τ → πν, ρν, a1ν
    (shares 17/39/44 %) with the visible fraction uniform on [m_V²/m_τ², 1]; a τ_h is a narrow jet
    (no τ collection at L1, as in ADC2021); the neutrinos enter MET.
Black box
    the SM mixture with a hidden fraction (drawn from the seed, 1–5 %) of one hidden signal (drawn
    from the seed); both are written only to ``truth.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

import lhcad
from lhcad.config import GenerateL1Config
from lhcad.generate.common import (
    OutputDir,
    fileset_entry,
    jagged_collection,
    primary_vertex,
    rng_for,
    split_counts,
    wrap_phi,
)
from lhcad.log import progress

log = logging.getLogger(__name__)

SM_FRACTIONS = {"w_lnu": 0.592, "z_ll": 0.067, "ttbar": 0.003, "qcd": 0.338}
SM_CODES = {"w_lnu": 1, "z_ll": 2, "ttbar": 3, "qcd": 4}
SIGNALS = {"ato4l": 1, "lq_btau": 2, "h0_tautau": 3, "hch_taunu": 4}
SIGNAL_CODES = {name: 10 + label for name, label in SIGNALS.items()}
DATASETS = ("sm", *SIGNALS, "blackbox")
RUNS = {name: i + 1 for i, name in enumerate(DATASETS)}
LEPTON_TRIGGER_PT = 23.0
TRIGGER_PREFILTER = 1.25  # true lepton pT > 23 / 1.25 GeV kept for the detector step (e: 12.5 σ, μ: 17 σ of the resolution)
N_E, N_MU, N_JET = 4, 4, 10
M_E, M_MU = 0.000511, 0.10566
CLASS = {"met": 1, "electron": 2, "muon": 3, "jet": 4}
CHUNK = 100_000  # events generated (and held in memory) at a time; one ROOT basket each
CHUNK_STRIDE = 10_000  # random-stream part = CHUNK_STRIDE * (100 * dataset index + file index) + chunk


# ------------------------------------------------------------------------------------ kinematics
def p4_lab(pt, y, phi, m):
    mt = np.sqrt(pt**2 + m**2)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y), mt * np.cosh(y)])


def two_body(rng, parent, m1, m2):
    """Isotropic two-body decay of ``parent`` (4, n) into masses m1, m2: two (4, n) arrays in the lab."""
    n = parent.shape[1]
    m = np.sqrt(np.maximum(parent[3] ** 2 - (parent[:3] ** 2).sum(0), 1e-12))
    p = np.sqrt(np.maximum((m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2), 0)) / (2 * m)
    cos = rng.uniform(-1, 1, n)
    sin = np.sqrt(1 - cos**2)
    phi = rng.uniform(-np.pi, np.pi, n)
    d = np.stack([sin * np.cos(phi), sin * np.sin(phi), cos])
    out = []
    for sign, mass in ((1.0, m1), (-1.0, m2)):
        pstar = sign * p * d
        estar = np.sqrt(p**2 + mass**2)
        b = parent[:3] / parent[3]
        b2 = np.maximum((b**2).sum(0), 1e-12)
        gamma = parent[3] / m
        bp = (b * pstar).sum(0)
        e = gamma * (estar + bp)
        vec = pstar + ((gamma - 1) * bp / b2 + gamma * estar) * b
        out.append(np.vstack([vec, e]))
    return out


def kin(p4):
    """(pT, η, φ) of (4, n) four-vectors."""
    pt = np.hypot(p4[0], p4[1])
    eta = np.arcsinh(p4[2] / np.maximum(pt, 1e-9))
    return pt, eta, np.arctan2(p4[1], p4[0])


def breit_wigner(rng, m0, width, n, lo, hi):
    return np.clip(m0 + 0.5 * width * rng.standard_cauchy(n), lo, hi)


class Objects:
    """Per-event object candidates gathered by a process, as lists of padded columns."""

    def __init__(self, n: int):
        self.n = n
        self.lists: dict[str, list[dict[str, np.ndarray]]] = {"electron": [], "muon": [], "jet": []}
        self.inv = np.zeros((2, n))  # invisible px, py

    def add(self, kind: str, p4, valid=None, charge=None, btag=None, mass=None):
        pt, eta, phi = kin(p4)
        valid = np.ones(self.n, bool) if valid is None else valid
        obj = {"pt": pt, "eta": eta, "phi": phi, "valid": valid}
        if kind in ("electron", "muon"):
            obj["charge"] = np.zeros(self.n) if charge is None else charge
        else:
            obj["btag"] = btag
            obj["mass"] = mass if mass is not None else np.sqrt(np.maximum(p4[3] ** 2 - (p4[:3] ** 2).sum(0), 0))
        self.lists[kind].append(obj)

    def add_lepton(self, rng, p4, flavour_mu, charge, valid=None):
        valid = np.ones(self.n, bool) if valid is None else valid
        self.add("muon", p4, valid & flavour_mu, charge)
        self.add("electron", p4, valid & ~flavour_mu, charge)

    def add_invisible(self, p4, valid=None):
        w = 1.0 if valid is None else valid
        self.inv += p4[:2] * w

    def lepton_pt_max(self) -> np.ndarray:
        """Largest true pT of the electron/muon candidates inside the acceptance (0 without any)."""
        best = np.zeros(self.n)
        for kind, eta_max in (("electron", 3.0), ("muon", 2.1)):
            for it in self.lists[kind]:
                ok = it["valid"] & (np.abs(it["eta"]) < eta_max)
                best = np.maximum(best, np.where(ok, it["pt"], 0.0))
        return best

    def take(self, idx: np.ndarray) -> Objects:
        """The candidates of the events ``idx``."""
        out = Objects(len(idx))
        out.lists = {k: [{kk: vv[idx] for kk, vv in it.items()} for it in v] for k, v in self.lists.items()}
        out.inv = self.inv[:, idx]
        return out


def _jet_p4(rng, n, pt_min, pt_scale, eta_max=4.0):
    pt = pt_min + rng.exponential(pt_scale, n)
    eta = rng.uniform(-eta_max, eta_max, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    m = pt * rng.uniform(0.05, 0.2, n)
    return p4_from(pt, eta, phi, m)


def p4_from(pt, eta, phi, m):
    pz = pt * np.sinh(eta)
    return np.stack([pt * np.cos(phi), pt * np.sin(phi), pz, np.sqrt(pt**2 + pz**2 + m**2)])


def _light_btag(rng, n):
    return (1.0 - (1.0 - rng.random(n)) ** (1 / 12.0)) ** (1 / 0.8)


def _b_btag(rng, n):
    return (1.0 - (1.0 - rng.random(n)) ** (1 / 1.2)) ** (1 / 5.0)


def _add_jets(rng, obj: Objects, k_max: int, mean: float, pt_min: float, pt_scale: float, eta_max=4.0):
    counts = rng.poisson(mean, obj.n)
    for i in range(k_max):
        p4 = _jet_p4(rng, obj.n, pt_min, pt_scale, eta_max)
        obj.add("jet", p4, counts > i, btag=_light_btag(rng, obj.n))


def _parent(rng, n, m, pt_scale, y_sigma):
    return p4_lab(rng.exponential(pt_scale, n), rng.normal(0, y_sigma, n), rng.uniform(-np.pi, np.pi, n), m)


M_TAU = 1.777
TAU_LEPTONIC_BR = 0.352  # B(τ → eνν) + B(τ → μνν) (PDG)
# τ → hadrons ν as two-body τ → V ν: (m_V, share of the hadronic width) for π, ρ(770), a1(1260)
TAU_HADRONIC_MODES = ((0.1396, 0.17), (0.775, 0.39), (1.23, 0.44))
# inverse CDF of the lepton momentum fraction in τ → ℓνν (massless ℓ, unpolarised τ, collinear limit):
# dN/dx = (5 − 9x² + 4x³)/3 on [0, 1], mean 0.35
_X_GRID = np.linspace(0.0, 1.0, 2001)
_X_CDF = (5 * _X_GRID - 3 * _X_GRID**3 + _X_GRID**4) / 3


def tau_lepton_fraction(rng, n):
    """Lepton momentum fraction x of τ → ℓνν: dN/dx = (5 − 9x² + 4x³)/3 (inverse-CDF sampling)."""
    return np.interp(rng.random(n), _X_CDF, _X_GRID)


def tau_hadron_fraction(rng, n):
    """Visible momentum fraction of τ → V ν (V = π, ρ, a1): uniform on [m_V²/m_τ², 1] (unpolarised τ)."""
    masses = np.array([m for m, _ in TAU_HADRONIC_MODES])
    shares = np.cumsum([w for _, w in TAU_HADRONIC_MODES])
    mode = np.minimum(np.searchsorted(shares / shares[-1], rng.random(n)), len(masses) - 1)
    lo = (masses[mode] / M_TAU) ** 2
    return lo + (1 - lo) * rng.random(n)


def _tau_decay(rng, obj: Objects, tau, leptonic, valid=None, charge=None):
    """τ → ℓνν (e or μ; collinear; x from the V−A spectrum) or τ_h → a narrow jet (τ → πν, ρν, a1ν).

    The neutrinos (momentum fraction 1 − x) go into the invisible sum (MET). ``valid`` masks events
    without this τ.
    """
    n = obj.n
    valid = np.ones(n, bool) if valid is None else valid
    x = np.where(leptonic, tau_lepton_fraction(rng, n), tau_hadron_fraction(rng, n))
    vis = tau * x
    mu = rng.random(n) < 0.5
    charge = np.where(rng.random(n) < 0.5, -1.0, 1.0) if charge is None else charge
    obj.add_lepton(rng, vis, mu, charge, valid=valid & leptonic)
    obj.add("jet", vis, valid & ~leptonic, btag=_light_btag(rng, n))
    obj.add_invisible(tau * (1 - x), valid)


def _add_recoil(rng, obj: Objects, system):
    """Initial-state radiation balancing the transverse momentum of a produced ``system``: one jet of
    opposite pT (reconstructed only above the jet threshold, like soft ISR)."""
    pt, _, phi = kin(system)
    n = obj.n
    obj.add("jet", p4_from(pt, rng.normal(0, 1.8, n), wrap_phi(phi + np.pi), pt * rng.uniform(0.05, 0.2, n)),
            btag=_light_btag(rng, n))


def _w_decay(rng, obj: Objects, w):
    """W → eν / μν (21.6 %), τν (10.8 %, the τ decayed), qq̄′ (67.6 %, two jets) (PDG branching fractions)."""
    n = obj.n
    u = rng.random(n)
    light, taus, had = u < 0.216, (u >= 0.216) & (u < 0.324), u >= 0.324
    d1, d2 = two_body(rng, w, np.where(taus, M_TAU, 0.0), np.zeros(n))
    charge = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    obj.add_lepton(rng, d1, rng.random(n) < 0.5, charge, valid=light)
    obj.add_invisible(d2, light | taus)
    _tau_decay(rng, obj, d1, rng.random(n) < TAU_LEPTONIC_BR, valid=taus, charge=charge)
    obj.add("jet", d1, had, btag=_light_btag(rng, n))
    obj.add("jet", d2, had, btag=_light_btag(rng, n))


# ------------------------------------------------------------------------------------ processes
def _w_lnu(rng, n):
    o = Objects(n)
    w = _parent(rng, n, breit_wigner(rng, 80.4, 2.1, n, 60, 120), 12.0, 1.5)
    lep, nu = two_body(rng, w, np.zeros(n), np.zeros(n))
    o.add_lepton(rng, lep, rng.random(n) < 0.5, np.where(rng.random(n) < 0.5, -1.0, 1.0))
    o.add_invisible(nu)
    return o


def _z_ll(rng, n):
    o = Objects(n)
    z = _parent(rng, n, breit_wigner(rng, 91.19, 2.5, n, 70, 120), 12.0, 1.5)
    l1, l2 = two_body(rng, z, np.zeros(n), np.zeros(n))
    mu = rng.random(n) < 0.5
    o.add_lepton(rng, l1, mu, np.full(n, -1.0))
    o.add_lepton(rng, l2, mu, np.full(n, 1.0))
    return o


def _ttbar(rng, n):
    o = Objects(n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = rng.exponential(90.0, n)
    for i, sign in enumerate((0.0, np.pi)):
        t = p4_lab(pt * rng.uniform(0.7, 1.0, n), rng.normal(0, 1.0, n), wrap_phi(phi + sign), np.full(n, 172.5))
        b, w = two_body(rng, t, np.full(n, 4.8), breit_wigner(rng, 80.4, 2.1, n, 60, 100))
        o.add("jet", b, btag=_b_btag(rng, n))
        d1, d2 = two_body(rng, w, np.zeros(n), np.zeros(n))
        if i == 0:  # leptonic W
            o.add_lepton(rng, d1, rng.random(n) < 0.5, np.where(rng.random(n) < 0.5, -1.0, 1.0))
            o.add_invisible(d2)
        else:
            o.add("jet", d1, btag=_light_btag(rng, n))
            o.add("jet", d2, btag=_light_btag(rng, n))
    return o


def _qcd(rng, n):
    o = Objects(n)
    n_jets = rng.integers(2, 5, n)
    lead = None
    for i in range(4):
        p4 = _jet_p4(rng, n, 20.0, 35.0 if i < 2 else 20.0, 3.0)
        if lead is None:
            lead = p4
        o.add("jet", p4, n_jets > i, btag=np.where(rng.random(n) < 0.1, _b_btag(rng, n), _light_btag(rng, n)))
    lpt, leta, lphi = kin(lead)
    pt = 20.0 + rng.exponential(8.0, n)
    eta = np.clip(leta + 0.15 * rng.standard_normal(n), -2.4, 2.4)
    phi = wrap_phi(lphi + 0.15 * rng.standard_normal(n))
    o.add_lepton(rng, p4_from(pt, eta, phi, np.zeros(n)), rng.random(n) < 0.5, np.where(rng.random(n) < 0.5, -1.0, 1.0))
    return o


def _ato4l(rng, n):
    o = Objects(n)
    a = _parent(rng, n, np.full(n, 50.0), 30.0, 1.2)
    m1 = rng.uniform(12.0, 30.0, n)
    m2 = rng.uniform(4.0, np.minimum(m1, 49.0 - m1))
    v1, v2 = two_body(rng, a, m1, m2)
    for v in (v1, v2):
        l1, l2 = two_body(rng, v, np.zeros(n), np.zeros(n))
        mu = rng.random(n) < 0.5
        o.add_lepton(rng, l1, mu, np.full(n, -1.0))
        o.add_lepton(rng, l2, mu, np.full(n, 1.0))
    return o


LQ_MASS, H0_MASS, HCH_MASS = 80.0, 60.0, 60.0


def _lq_btau(rng, n):
    """QCD pair production gg, qq̄ → LQ LQ̄ (independent of the LQ Yukawa coupling; dominant at 80 GeV),
    each LQ → bτ: two b jets, two τ (leptonic 35.2 % each, else a τ jet), MET from up to four ν."""
    o = Objects(n)
    # pair mass above threshold: the gg → S S̄ rise (∝ β) times the falling parton luminosity peaks
    # ~20 % above 2 m_LQ; the pair recoils against ISR
    m_pair = 2 * LQ_MASS + rng.gamma(2.0, 35.0, n)
    pair = p4_lab(rng.exponential(25.0, n), rng.normal(0, 1.0, n), rng.uniform(-np.pi, np.pi, n), m_pair)
    lq1, lq2 = two_body(rng, pair, np.full(n, LQ_MASS), np.full(n, LQ_MASS))
    for lq, sign in ((lq1, -1.0), (lq2, 1.0)):
        b, tau = two_body(rng, lq, np.full(n, 4.8), np.full(n, M_TAU))
        o.add("jet", b, btag=_b_btag(rng, n))
        _tau_decay(rng, o, tau, rng.random(n) < TAU_LEPTONIC_BR, charge=np.full(n, sign))
    _add_recoil(rng, o, pair)
    return o


def _h0_tautau(rng, n):
    """Gluon fusion gg → h0(60 GeV) → ττ: pT(h0) from ISR (mean ≈ 29 GeV, balanced by a recoil jet),
    each τ leptonic (35.2 %) or hadronic."""
    o = Objects(n)
    h = p4_lab(rng.gamma(1.6, 18.0, n), rng.normal(0, 1.8, n), rng.uniform(-np.pi, np.pi, n), np.full(n, H0_MASS))
    t1, t2 = two_body(rng, h, np.full(n, M_TAU), np.full(n, M_TAU))
    for t, sign in ((t1, -1.0), (t2, 1.0)):
        _tau_decay(rng, o, t, rng.random(n) < TAU_LEPTONIC_BR, charge=np.full(n, sign))
    _add_recoil(rng, o, h)
    return o


def _hch_taunu(rng, n):
    """Light charged scalar (m < m_t): produced in top decays, tt̄ → (b h±)(b W∓), h± → τν.

    Top-pair kinematics as in the SM tt̄ process; the W decays inclusively (ℓν, τν, qq̄′).
    """
    o = Objects(n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = rng.exponential(90.0, n)
    for i, sign in enumerate((0.0, np.pi)):
        t = p4_lab(pt * rng.uniform(0.7, 1.0, n), rng.normal(0, 1.0, n), wrap_phi(phi + sign), np.full(n, 172.5))
        if i == 0:  # t → b h±, h± → τν
            b, hch = two_body(rng, t, np.full(n, 4.8), np.full(n, HCH_MASS))
            o.add("jet", b, btag=_b_btag(rng, n))
            tau, nu = two_body(rng, hch, np.full(n, M_TAU), np.zeros(n))
            _tau_decay(rng, o, tau, rng.random(n) < TAU_LEPTONIC_BR)
            o.add_invisible(nu)
        else:  # t → b W
            b, w = two_body(rng, t, np.full(n, 4.8), breit_wigner(rng, 80.4, 2.1, n, 60, 100))
            o.add("jet", b, btag=_b_btag(rng, n))
            _w_decay(rng, o, w)
    return o


PROCESSES = {"w_lnu": _w_lnu, "z_ll": _z_ll, "ttbar": _ttbar, "qcd": _qcd,
             "ato4l": _ato4l, "lq_btau": _lq_btau, "h0_tautau": _h0_tautau, "hch_taunu": _hch_taunu}


# ------------------------------------------------------------------------------------ reconstruction
def _collect(obj: Objects, kind: str, k: int, pt_min: float, eta_max: float) -> dict[str, np.ndarray]:
    """Stack a kind's candidates to (n, m), apply acceptance, pT-order, keep the k leading (padded)."""
    items = obj.lists[kind]
    n = obj.n
    if not items:
        cols = {"pt": np.zeros((n, 0)), "eta": np.zeros((n, 0)), "phi": np.zeros((n, 0)),
                "valid": np.zeros((n, 0), bool)}
    else:
        cols = {key: np.stack([it[key] for it in items], axis=1) for key in items[0]}
    cols["valid"] = cols["valid"] & (cols["pt"] > pt_min) & (np.abs(cols["eta"]) < eta_max)
    key = np.where(cols["valid"], cols["pt"], -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")[:, :k]
    out = {name: np.take_along_axis(v, order, axis=1) for name, v in cols.items()}
    if out["pt"].shape[1] < k:  # pad to k slots
        pad = k - out["pt"].shape[1]
        out = {name: np.pad(v, ((0, 0), (0, pad))) for name, v in out.items()}
    return out


def make_events(rng: np.random.Generator, process: str, n: int) -> dict[str, Any]:
    """``n`` events of one process passing the lepton trigger (rejection sampling in blocks)."""
    parts, have, eff = [], 0, 0.5
    while have < n:
        m = int(min(max(1.2 * (n - have) / eff, 2000), 300_000))
        obj = PROCESSES[process](rng, m)
        # events whose leptons cannot reach the trigger threshold after smearing (> 12 σ of the
        # lepton pT resolution) are dropped before the detector step: same accepted sample, less work
        obj = obj.take(np.flatnonzero(obj.lepton_pt_max() > LEPTON_TRIGGER_PT / TRIGGER_PREFILTER))
        ev = _reconstruct(rng, obj)
        lead = np.maximum(np.where(ev["electron"]["valid"][:, 0], ev["electron"]["pt"][:, 0], 0),
                          np.where(ev["muon"]["valid"][:, 0], ev["muon"]["pt"][:, 0], 0))
        passed = np.flatnonzero(lead > LEPTON_TRIGGER_PT)
        eff = max(len(passed) / m, 0.005)
        keep = passed[: n - have]
        parts.append(_take(ev, keep))
        have += len(keep)
    return _concat(parts)


def _reconstruct(rng, obj: Objects) -> dict[str, Any]:
    n = obj.n
    _add_jets(rng, obj, 3, 0.8, 15.0, 25.0)  # ISR
    _add_jets(rng, obj, 4, 1.5, 15.0, 6.0)  # pile-up
    for kind in ("electron", "muon", "jet"):  # detector resolution
        res = {"electron": 0.02, "muon": 0.015, "jet": 0.12}[kind]
        for it in obj.lists[kind]:
            it["pt"] = it["pt"] * np.maximum(1 + res * rng.standard_normal(n), 0.1)
    ev = {
        "electron": _collect(obj, "electron", N_E, 3.0, 3.0),
        "muon": _collect(obj, "muon", N_MU, 3.0, 2.1),
        "jet": _collect(obj, "jet", N_JET, 15.0, 4.0),
    }
    ht = np.where(ev["jet"]["valid"], ev["jet"]["pt"], 0).sum(1)
    sigma = 0.5 * np.sqrt(ht) + 5.0
    mex = obj.inv[0] + sigma * rng.standard_normal(n)
    mey = obj.inv[1] + sigma * rng.standard_normal(n)
    met = np.hypot(mex, mey)
    ev["met"] = {"pt": met, "phi": np.arctan2(mey, mex), "significance": (met / sigma) ** 2}
    ev["npvs"] = rng.poisson(35, n)
    return ev


def _take(ev, idx):
    return {k: ({kk: vv[idx] for kk, vv in v.items()} if isinstance(v, dict) else v[idx]) for k, v in ev.items()}


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return {k: ({kk: np.concatenate([p[k][kk] for p in parts]) for kk in v} if isinstance(v, dict)
                else np.concatenate([p[k] for p in parts])) for k, v in first.items()}


def sample(rng: np.random.Generator, composition: dict[str, int]) -> dict[str, Any]:
    """Events of several processes (name -> count), shuffled, with truth_label / truth_process."""
    parts = []
    for proc, count in composition.items():
        if count <= 0:
            continue
        ev = make_events(rng, proc, count)
        ev["truth_label"] = np.full(count, SIGNALS.get(proc, 0))
        ev["truth_process"] = np.full(count, SM_CODES.get(proc) or SIGNAL_CODES[proc])
        parts.append(ev)
    ev = _concat(parts)
    return _take(ev, rng.permutation(len(ev["truth_label"])))


def to_branches(ev: dict[str, Any], run: int, first_event: int) -> dict[str, Any]:
    n = len(ev["truth_label"])
    evt = np.arange(first_event, first_event + n, dtype=np.uint64)

    def coll(kind, mass=None):
        c = ev[kind]
        valid = c["valid"]
        fields = {"pt": c["pt"][valid].astype(np.float32), "eta": c["eta"][valid].astype(np.float32),
                  "phi": c["phi"][valid].astype(np.float32)}
        if kind == "jet":
            fields["mass"] = c["mass"][valid].astype(np.float32)
            fields["btagDeepB"] = c["btag"][valid].astype(np.float32)
            fields["jetId"] = np.full(valid.sum(), 6, np.int32)
        else:
            fields["mass"] = np.full(valid.sum(), mass, np.float32)
            fields["charge"] = c["charge"][valid].astype(np.int32)
        return jagged_collection(fields, valid.sum(1))

    return {
        "run": np.full(n, run, np.uint32),
        "luminosityBlock": ((evt - 1) // 1000 + 1).astype(np.uint32),
        "event": evt,
        "Electron": coll("electron", M_E),
        "Muon": coll("muon", M_MU),
        "Jet": coll("jet"),
        "MET_pt": ev["met"]["pt"].astype(np.float32),
        "MET_phi": ev["met"]["phi"].astype(np.float32),
        "MET_significance": ev["met"]["significance"].astype(np.float32),
        **primary_vertex(np.random.default_rng([first_event, run, 7]), ev["npvs"]),
        "truth_label": ev["truth_label"].astype(np.int32),
        "truth_process": ev["truth_process"].astype(np.int32),
    }


def to_particles(ev: dict[str, Any]) -> np.ndarray:
    """The ADC2021 ``Particles`` array (N, 19, 4): MET, 4 e, 4 μ, 10 jets × (pT, η, φ, class)."""
    n = len(ev["truth_label"])
    out = np.zeros((n, 1 + N_E + N_MU + N_JET, 4), np.float32)
    out[:, 0, 0] = ev["met"]["pt"]
    out[:, 0, 2] = ev["met"]["phi"]
    out[:, 0, 3] = CLASS["met"]
    start = 1
    for kind, k in (("electron", N_E), ("muon", N_MU), ("jet", N_JET)):
        c = ev[kind]
        v = c["valid"]
        sl = slice(start, start + k)
        out[:, sl, 0] = np.where(v, c["pt"], 0)
        out[:, sl, 1] = np.where(v, c["eta"], 0)
        out[:, sl, 2] = np.where(v, c["phi"], 0)
        out[:, sl, 3] = np.where(v, CLASS[kind], 0)
        start += k
    return out


# ------------------------------------------------------------------------------------ output
def _sm_composition(rng, n):
    counts = rng.multinomial(n, list(SM_FRACTIONS.values()))
    return dict(zip(SM_FRACTIONS, counts.tolist(), strict=True))


def generate_l1(cfg: GenerateL1Config, out_dir: str | Path, h5: str | Path | None = None) -> dict[str, Any]:
    """Write the L1 datasets (sm, 4 signals, blackbox) into ``out_dir``; returns the truth record."""
    if h5 is not None:
        from lhcad.generate.h5 import check_h5_target

        check_h5_target(h5)
    hidden_rng = rng_for(cfg.seed, "l1", 999)
    hidden_signal = list(SIGNALS)[int(hidden_rng.integers(len(SIGNALS)))]
    hidden_fraction = float(np.round(hidden_rng.uniform(0.01, 0.05), 4))
    plan: dict[str, list[dict[str, int]]] = {}
    chunk_plan = {"sm": cfg.events, **dict.fromkeys(SIGNALS, cfg.signal_events), "blackbox": cfg.blackbox_events}
    fileset: dict[str, Any] = {}
    truth_sets: dict[str, Any] = {}
    particles: dict[str, list[np.ndarray]] = {}
    with OutputDir(out_dir) as out, progress() as bar:
        task = bar.add_task("generate l1", total=sum(len(split_counts(v, cfg.events_per_file)) for v in chunk_plan.values()))
        for d_index, (dataset, total) in enumerate(chunk_plan.items()):
            files, first, comp_total = [], 1, {}
            for i, n in enumerate(split_counts(total, cfg.events_per_file)):

                def chunks(i=i, n=n, d_index=d_index, dataset=dataset):
                    nonlocal first
                    for j, m in enumerate(split_counts(n, CHUNK)):
                        rng = rng_for(cfg.seed, "l1", CHUNK_STRIDE * (100 * d_index + i) + j)
                        if dataset == "sm":
                            comp = _sm_composition(rng, m)
                        elif dataset == "blackbox":
                            n_sig = int(rng.binomial(m, hidden_fraction))
                            comp = {**_sm_composition(rng, m - n_sig), hidden_signal: n_sig}
                        else:
                            comp = {dataset: m}
                        ev = sample(rng, comp)
                        if h5 is not None:
                            particles.setdefault(dataset, []).append(to_particles(ev))
                        for k, v in comp.items():
                            comp_total[k] = comp_total.get(k, 0) + v
                        yield to_branches(ev, RUNS[dataset], first)
                        first += m

                files.append(out.write_root_chunks(f"{dataset}_{i:03d}.root", chunks()))
                bar.advance(task)
            if files:
                plan[dataset] = comp_total
                fileset[dataset] = fileset_entry(files, {"kind": "l1", "run": RUNS[dataset],
                                                         "labelled": dataset != "blackbox"})
                truth_sets[dataset] = {"files": [p.name for p in files], "events": total, "composition": comp_total}
        truth = {
            "generator": "lhcad.generate.l1",
            "lhcad_version": lhcad.__version__,
            "seed": cfg.seed,
            "config": cfg.model_dump(mode="json"),
            "datasets": truth_sets,
            "sm_fractions": SM_FRACTIONS,
            "truth_label": {"sm": 0, **SIGNALS},
            "truth_process": {**SM_CODES, **SIGNAL_CODES},
            "runs": RUNS,
            "blackbox": {"hidden_signal": hidden_signal, "hidden_fraction": hidden_fraction},
            "lepton_trigger_pt": LEPTON_TRIGGER_PT,
            "particles_layout": {"shape": [None, 19, 4], "slots": {"met": [0, 1], "electron": [1, 5],
                                 "muon": [5, 9], "jet": [9, 19]}, "class": CLASS},
        }
        if h5 is not None:
            from lhcad.generate.h5 import write_adc2021

            truth["h5"] = str(write_adc2021(out, h5, particles))
        out.write_json("fileset.json", fileset)
        out.write_json("truth.json", truth)
    return truth

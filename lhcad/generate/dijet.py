"""LHC-Olympics-like dijet events at 13 TeV as NanoAOD: QCD background + a resonance ``A → B C``.

Everything is vectorised numpy on padded (n_events, n_objects) arrays; events are built in blocks.

Physics model (every number here is a documented choice, tuned to the published shapes)
----------------------------------------------------------------------------------------
QCD dijet kinematics
    The parton-level dijet mass ``M`` is drawn from the 4-parameter dijet function
    ``f(x) = (1 - x)^p1 / x^(p2 + p3 ln x)``, ``x = M / 13 TeV``, with p1 = 4, p2 = 2, p3 = 0
    (softer than the p1 ≈ 8–11, p2 ≈ 4–6 of CMS inclusive fits, like a spectrum after a dijet trigger
    and prescale, so that the SR 3.3–3.7 TeV holds ≈ 2.3 % of the events after |Δη| < 1.3, as an AD
    benchmark needs), on 1.3–9.5 TeV so that the reconstructed spectrum is smooth over 1.5–8 TeV. The scattering angle follows the QCD t-channel: χ = exp(|Δy|) is
    uniform in [1, 5] (flat dσ/dχ of Rutherford-like scattering), i.e. |Δy| < 1.61; about 2/3 of
    the events pass the usual |Δη| < 1.3. The dijet system's boost ``y_b`` is Gaussian with
    σ = 0.3 ln(13 TeV / M) (the kinematic range of x1, x2 shrinks with M). Because ``M`` is drawn
    independently of the angles, the m_jj shape is the same after any |Δη| cut.
    The two jets are massive: an exact two-body decay M → (m1, m2) in the dijet rest frame, then a
    boost along z; the leading jet pT spectrum therefore falls steeply, as M does.
QCD jet mass (Sudakov-like)
    m/pT is Gamma-distributed (shape 2.2: Sudakov suppression at small mass, exponential tail)
    with mean 0.085 (1 + 0.35 gluon) (pT / 1 TeV)^-0.08, clipped to [0.01, 0.45]: jet masses grow
    linearly with pT, slightly slower than linear (running α_s). The gluon-jet fraction falls
    linearly from 0.60 at 1.5 TeV to 0.35 at 8 TeV (valence quarks dominate at high x).
QCD substructure
    τ21 is Gaussian (σ 0.11, reflected into [0.1, 0.98]) with mean 0.70 − 0.06 (ρ' − 2.5) + 0.04 gluon,
    ρ' = ln(m²/pT / GeV) — the CMS DDT slope: heavier jets at a given pT look more two-prong. As
    masses scale with pT ∝ m_jj, QCD τ21 and mj drift smoothly with m_jj: the mild correlation that
    sculpts CWoLa and that CATHODE-like methods must interpolate. τ32 ~ N(0.72 + 0.02 g, 0.09),
    τ43 ~ N(0.80, 0.07). τ1 = 1.5 (m/pT) × LogNormal(0, 0.3). Soft drop removes soft radiation:
    m_SD = m × Kumaraswamy(4, 2) (mean 0.71), and 10 % of QCD jets are groomed to m × U(0, 0.2).
    b-tag (``btagDeepB``): Kumaraswamy(5, 1.2) for b jets (3 % of QCD quark jets, 5 % of gluon jets:
    g → bb̄), Kumaraswamy(0.8, 12) otherwise; ``lsf3`` Kumaraswamy(1.3, 5) without a lepton;
    ``nConstituents`` ≈ Poisson(22 + 9 ln(pT/200 GeV) + 10 gluon + 6 (prongs − 1)). (Kumaraswamy
    distributions are Beta-like shapes drawn by inverse CDF: several times cheaper than Beta.)
Signal (:mod:`lhcad.generate.signals`)
    ``M`` is Gaussian around M_A with the signal's natural width (1 %), cos θ* is uniform
    (isotropic) within |Δy| < 2 (outside the dijet acceptance nothing is generated) and the
    daughters' masses are the parameters of the model. Prong count sets τ_N ratios, b content the
    DeepB score, leptonic decays the LSF3 score and a neutrino in the missing pT. A multi-prong
    daughter is contained in its R = 0.8 jet depending on x = 2m/(0.8 pT) (always for x < 0.7, never
    for x > 1.3); otherwise its jet catches part of the decay only (mass × U(0.15, 0.6), pT ×
    U(0.7, 0.95), QCD-like substructure): about 8 % of the LHCO X(500) jets, more for heavy
    daughters at low pT — the realistic tail that keeps AD from being trivially easy.
Detector response
    Jet pT resolution 6.5 % (Gaussian) → m_jj resolution ≈ 4.6 %; with probability 12 % a jet loses
    a fraction Exp(0.07) (≤ 40 %) of its pT *and* mass to out-of-cone FSR: the low tail of the m_jj
    and jet-mass peaks. Jet-mass resolution 8 % (Gaussian). φ resolution 0.02.
Other objects
    A third, softer AK8 jet in 25 % of the events (pT = U(0.25, 0.75) × the softer leading jet);
    AK4 jets: one core jet per AK8 jet (pT × U(0.75, 0.98), the same fraction for the two leading
    ones) plus Poisson(1.5) (≤ 4) soft emissions below the softest core jet, generated already
    pT-ordered (pT_1 = 30 + Exp(60) GeV truncated, pT_(i+1) = 30 + (pT_i − 30) U(0, 1)); MET: a
    2-D Gaussian of σ = 0.6 √HT plus neutrinos from leptonic decays, ``MET_significance`` =
    |MET|²/σ² (χ² with 2 d.o.f. for QCD); ``PV_npvs`` ~ Poisson(32) (+ ``PV_x/y/z`` for coffea).

Truth: branches ``truth_label`` (0 QCD, 1 signal) and ``truth_process`` (0 QCD, signal code); coffea's
NanoAODSchema groups them as ``events.truth.label`` / ``events.truth.process``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lhcad.generate.common import (
    invariant_mass,
    p4_from_ptetaphim,
    padded_to_collection,
    primary_vertex,
    sample_from_pdf,
    two_body_momentum,
    wrap_phi,
)
from lhcad.generate.signals import Signal

log = logging.getLogger(__name__)

SQRT_S = 13000.0
DIJET_PARAMS = (4.0, 2.0, 0.0)  # p1, p2, p3 of the dijet function
M_RANGE = (1300.0, 9500.0)  # parton-level M range sampled (reco spectrum smooth on 1.5–8 TeV)
CHI_MAX = 5.0
DELTA_ETA_CUT = 1.3
SIGNAL_MAX_DY = 2.0
PT_RESOLUTION = 0.065
MASS_RESOLUTION = 0.08
FSR_PROB, FSR_SCALE, FSR_MAX = 0.12, 0.07, 0.40
PHI_RESOLUTION = 0.02
N_FATJET_SLOTS = 3
N_JET_SLOTS = 7

FATJET_FIELDS = ("pt", "eta", "phi", "mass", "msoftdrop", "tau1", "tau2", "tau3", "tau4",
                 "nConstituents", "lsf3", "btagDeepB", "jetId")
JET_FIELDS = ("pt", "eta", "phi", "mass", "btagDeepB", "jetId")
INT_FIELDS = {"nConstituents": np.int32, "jetId": np.int32}



def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect values at the edges of [lo, hi] into the interval.

    Clipping would pile up a point mass at the edges (6 % of QCD τ21 at 0.98), which no continuous
    density model can describe: CATHODE's data-vs-template classifier then finds the pile-up
    instead of the signal. Reflection keeps the density continuous inside the interval.
    """
    x = np.where(x > hi, 2 * hi - x, x)
    x = np.where(x < lo, 2 * lo - x, x)
    return np.clip(x, lo, hi)  # only values beyond a full interval width would still be clipped

def dijet_function(m: np.ndarray, params=DIJET_PARAMS) -> np.ndarray:
    """The 4-parameter dijet function shape (without normalisation) at m (GeV)."""
    p1, p2, p3 = params
    x = np.asarray(m, dtype=float) / SQRT_S
    return (1 - x) ** p1 / x ** (p2 + p3 * np.log(x))


def gluon_fraction(m: np.ndarray) -> np.ndarray:
    return np.clip(0.60 - 0.25 * (m - 1500.0) / 6500.0, 0.2, 0.7)


# ------------------------------------------------------------------------------------ substructure
def kumaraswamy(rng: np.random.Generator, a: float, b: float, n: int) -> np.ndarray:
    """Kumaraswamy(a, b) on [0, 1] by inverse CDF: a Beta-like shape at a fraction of Beta's cost."""
    return (1.0 - (1.0 - rng.random(n)) ** (1.0 / b)) ** (1.0 / a)


def substructure(rng: np.random.Generator, pt, mass, prongs, nb, lep, gluon) -> dict[str, np.ndarray]:
    """Substructure branches of AK8 jets from their (reco) pT, mass and pattern (all 1-D arrays).

    1-prong jets (QCD and light quarks) and multi-prong jets are drawn on their own subsets, so a
    QCD block never pays for the signal model.
    """
    n = len(pt)
    r = mass / pt
    t21, t32, t43, tau1, msd = (np.empty(n) for _ in range(5))
    q = np.flatnonzero(prongs <= 1)
    if len(q):
        nq = len(q)
        rho = np.log(np.maximum(mass[q], 1.0) ** 2 / pt[q])
        t21[q] = 0.70 - 0.06 * (rho - 2.5) + 0.04 * gluon[q] + 0.11 * rng.standard_normal(nq)
        t32[q] = 0.72 + 0.02 * gluon[q] + 0.09 * rng.standard_normal(nq)
        t43[q] = 0.80 + 0.07 * rng.standard_normal(nq)
        tau1[q] = 1.5 * r[q] * np.exp(0.3 * rng.standard_normal(nq))
        groomed = rng.random(nq) < 0.10
        msd[q] = mass[q] * np.where(groomed, 0.2 * rng.random(nq), kumaraswamy(rng, 4.0, 2.0, nq))
    s = np.flatnonzero(prongs > 1)
    if len(s):
        ns = len(s)
        p = prongs[s]

        def ratio_mean(N, qcd_mean):
            return np.where(N <= p, np.minimum(0.75, 0.28 + 0.16 * (p - N)), qcd_mean)

        t21[s] = ratio_mean(2, 0.70) + 0.09 * rng.standard_normal(ns)
        t32[s] = ratio_mean(3, 0.72) + 0.09 * rng.standard_normal(ns)
        t43[s] = ratio_mean(4, 0.80) + 0.07 * rng.standard_normal(ns)
        tau1[s] = 1.2 * r[s] * np.exp(0.3 * rng.standard_normal(ns))
        msd[s] = mass[s] * np.clip(0.95 + 0.04 * rng.standard_normal(ns), 0.5, 1.0)
    tau1 = np.clip(tau1, 0.01, 0.8)
    tau2 = tau1 * _fold(t21, 0.10, 0.98)
    tau3 = tau2 * _fold(t32, 0.10, 0.98)
    tau4 = tau3 * _fold(t43, 0.10, 0.98)
    # b-tag: b content of the pattern, or g → bb / heavy flavour in QCD (3 % + 2 % for gluons)
    is_b = (nb > 0) | ((prongs <= 1) & (rng.random(n) < 0.03 + 0.02 * gluon))
    btag = np.where(is_b, kumaraswamy(rng, 5.0, 1.2, n), kumaraswamy(rng, 0.8, 12.0, n))
    lsf3 = kumaraswamy(rng, 1.3, 5.0, n)
    if lep.any():
        li = np.flatnonzero(lep)
        lsf3[li] = kumaraswamy(rng, 7.0, 1.2, len(li))
    mean_n = np.maximum(22 + 9 * np.log(pt / 200.0) + 10 * gluon + 6 * (np.maximum(prongs, 1) - 1), 5)
    nconst = np.rint(mean_n + np.sqrt(mean_n) * rng.standard_normal(n))  # Poisson, normal approx.
    jet_id = np.where(rng.random(n) < 0.98, 6, 2)
    return {
        "msoftdrop": msd, "tau1": tau1, "tau2": tau2, "tau3": tau3, "tau4": tau4,
        "nConstituents": np.clip(nconst, 1, 255), "lsf3": lsf3, "btagDeepB": btag, "jetId": jet_id,
    }


def qcd_mass_ratio(rng: np.random.Generator, pt: np.ndarray, gluon: np.ndarray) -> np.ndarray:
    mean = 0.085 * (1 + 0.35 * gluon) * (np.maximum(pt, 50.0) / 1000.0) ** -0.08
    return np.clip(rng.gamma(2.2, mean / 2.2), 0.01, 0.45)


# ------------------------------------------------------------------------------------ events
@dataclass
class Block:
    """A block of events as padded arrays (one row per event)."""

    fatjet: dict[str, np.ndarray]  # (n, N_FATJET_SLOTS)
    fatjet_valid: np.ndarray
    jet: dict[str, np.ndarray]  # (n, N_JET_SLOTS)
    jet_valid: np.ndarray
    event: dict[str, np.ndarray]  # (n,) MET_*, PV_npvs, truth_*
    mjj: np.ndarray  # reconstructed m_jj of the two leading AK8 jets
    delta_eta: np.ndarray

    def __len__(self) -> int:
        return len(self.mjj)

    def take(self, idx: np.ndarray) -> Block:
        return Block(
            {k: v[idx] for k, v in self.fatjet.items()}, self.fatjet_valid[idx],
            {k: v[idx] for k, v in self.jet.items()}, self.jet_valid[idx],
            {k: v[idx] for k, v in self.event.items()}, self.mjj[idx], self.delta_eta[idx],
        )

    @staticmethod
    def concat(blocks: list[Block]) -> Block:
        blocks = [b for b in blocks if len(b)]
        if len(blocks) == 1:
            return blocks[0]
        cat = np.concatenate
        return Block(
            {k: cat([b.fatjet[k] for b in blocks]) for k in blocks[0].fatjet},
            cat([b.fatjet_valid for b in blocks]),
            {k: cat([b.jet[k] for b in blocks]) for k in blocks[0].jet},
            cat([b.jet_valid for b in blocks]),
            {k: cat([b.event[k] for b in blocks]) for k in blocks[0].event},
            cat([b.mjj for b in blocks]), cat([b.delta_eta for b in blocks]),
        )


def _kinematics(rng, M, m1, m2, cos_theta, n):
    """Two jets from M → (m1, m2): exact two-body decay, isotropic φ, Gaussian boost along z."""
    p = two_body_momentum(M, m1, m2)
    sin_theta = np.sqrt(1 - cos_theta**2)
    pt = p * sin_theta
    pz = p * cos_theta
    e1 = np.sqrt(p**2 + m1**2)
    e2 = np.sqrt(p**2 + m2**2)
    yb = rng.normal(0.0, 0.3 * np.log(SQRT_S / M), n)
    ch, sh = np.cosh(yb), np.sinh(yb)
    eta1 = np.arcsinh((pz * ch + e1 * sh) / pt)
    eta2 = np.arcsinh((-pz * ch + e2 * sh) / pt)
    phi1 = rng.uniform(-np.pi, np.pi, n)
    phi2 = wrap_phi(phi1 + np.pi)
    return pt, eta1, eta2, phi1, phi2


def _detector(rng, pt, mass, phi, n):
    """Reco pT, mass, φ: Gaussian resolutions plus an FSR low tail shared by pT and mass."""
    fsr = np.where(rng.random(n) < FSR_PROB, 1 - np.minimum(rng.exponential(FSR_SCALE, n), FSR_MAX), 1.0)
    pt_r = pt * fsr * np.maximum(1 + PT_RESOLUTION * rng.standard_normal(n), 0.5)
    m_r = np.maximum(mass * fsr * (1 + MASS_RESOLUTION * rng.standard_normal(n)), 1.0)
    phi_r = wrap_phi(phi + PHI_RESOLUTION * rng.standard_normal(n))
    return pt_r, m_r, phi_r


def _containment(rng, pt, m_true, prongs, n):
    """Boosted-decay containment in an R = 0.8 jet (multi-prong daughters only).

    The decay products of a daughter of mass m and transverse momentum pT spread over ΔR ≈ 2m/pT.
    With x = 2m/(0.8 pT), a daughter is contained with probability 1 for x < 0.7, 0 for x > 1.3 and
    linearly in between. An uncontained daughter gives a jet with only part of the decay: mass
    m × U(0.15, 0.6), pT × U(0.7, 0.95) and QCD-like (1-prong) substructure. Changes ``prongs`` in place.
    """
    m_jet, pt_jet = [], []
    for i in range(2):
        x = 2 * m_true[i] / (0.8 * pt)
        lost = (prongs[i] > 1) & (rng.random(n) > np.clip((1.3 - x) / 0.6, 0.0, 1.0))
        m_jet.append(np.where(lost, m_true[i] * rng.uniform(0.15, 0.6, n), m_true[i]))
        pt_jet.append(np.where(lost, pt * rng.uniform(0.7, 0.95, n), pt))
        prongs[i] = np.where(lost, 1.0, prongs[i])
    return m_jet, pt_jet


def make_block(
    rng: np.random.Generator,
    n: int,
    signal: Signal | None = None,
    m_range: tuple[float, float] = M_RANGE,
) -> Block:
    """``n`` QCD events (``signal=None``) or ``n`` signal events of ``signal``."""
    if signal is None:
        M = sample_from_pdf(rng, dijet_function, m_range[0], m_range[1], n)
        chi = rng.uniform(1.0, CHI_MAX, n)
        cos_theta = np.tanh(0.5 * np.log(chi)) * rng.choice([-1.0, 1.0], n)
        gluon = (rng.random((2, n)) < gluon_fraction(M)).astype(float)
        pt0 = 0.5 * M * np.sqrt(1 - cos_theta**2)
        m_true = [qcd_mass_ratio(rng, pt0, gluon[i]) * pt0 for i in range(2)]
        prongs = [np.ones(n), np.ones(n)]
        nb = [np.zeros(n), np.zeros(n)]
        lep = [np.zeros(n, bool), np.zeros(n, bool)]
        code = 0
    else:
        M = signal.mass * (1 + signal.width * rng.standard_normal(n))
        cos_theta = rng.uniform(-1.0, 1.0, n) * np.tanh(SIGNAL_MAX_DY / 2)
        pt0 = 0.5 * M * np.sqrt(1 - cos_theta**2)
        gluon = np.zeros((2, n))
        m_true, prongs, nb, lep = [], [], [], []
        for d in signal.daughters:
            if d.mass is None:
                m_true.append(qcd_mass_ratio(rng, pt0, np.zeros(n)) * pt0)
            else:
                m_true.append(np.full(n, d.mass))
            prongs.append(np.full(n, float(d.prongs)))
            nb.append(np.full(n, float(d.b)))
            lep.append(rng.random(n) < d.lepton_fraction)
        code = signal.code

    pt, eta1, eta2, phi1, phi2 = _kinematics(rng, M, m_true[0], m_true[1], cos_theta, n)
    pt_jet = [pt, pt]
    if signal is not None:
        m_true, pt_jet = _containment(rng, pt, m_true, prongs, n)
    pt1, m1, phi1 = _detector(rng, pt_jet[0], m_true[0], phi1, n)
    pt2, m2, phi2 = _detector(rng, pt_jet[1], m_true[1], phi2, n)
    mjj = invariant_mass(p4_from_ptetaphim(pt1, eta1, phi1, m1), p4_from_ptetaphim(pt2, eta2, phi2, m2))
    delta_eta = np.abs(eta1 - eta2)

    # pT-order the two leading jets (NanoAOD collections are pT-ordered): swap where needed
    swap = pt2 > pt1
    pt1, pt2 = np.where(swap, pt2, pt1), np.where(swap, pt1, pt2)
    eta1, eta2 = np.where(swap, eta2, eta1), np.where(swap, eta1, eta2)
    phi1, phi2 = np.where(swap, phi2, phi1), np.where(swap, phi1, phi2)
    m1, m2 = np.where(swap, m2, m1), np.where(swap, m1, m2)
    for lst in (prongs, nb, lep):
        a, b = lst
        lst[:] = [np.where(swap, b, a), np.where(swap, a, b)]
    g1, g2 = np.where(swap, gluon[1], gluon[0]), np.where(swap, gluon[0], gluon[1])

    # third, softer AK8 jet (QCD radiation), always below the two leading ones
    has3 = rng.random(n) < 0.25
    i3 = np.flatnonzero(has3)
    n3 = len(i3)
    pt3 = pt2[i3] * rng.uniform(0.25, 0.75, n3)
    g3 = (rng.random(n3) < 0.6).astype(float)
    m3 = qcd_mass_ratio(rng, pt3, g3) * pt3
    eta3 = rng.uniform(-2.4, 2.4, n3)
    phi3 = rng.uniform(-np.pi, np.pi, n3)

    cat = np.concatenate
    sub = substructure(
        rng, cat([pt1, pt2, pt3]), cat([m1, m2, m3]), cat([prongs[0], prongs[1], np.ones(n3)]),
        cat([nb[0], nb[1], np.zeros(n3)]), cat([lep[0], lep[1], np.zeros(n3, bool)]), cat([g1, g2, g3]),
    )
    flat = {"pt": cat([pt1, pt2, pt3]), "eta": cat([eta1, eta2, eta3]), "phi": cat([phi1, phi2, phi3]),
            "mass": cat([m1, m2, m3]), **sub}
    fatjet = {}
    for k, v in flat.items():
        arr = np.zeros((n, N_FATJET_SLOTS))
        arr[:, 0] = v[:n]
        arr[:, 1] = v[n:2 * n]
        arr[i3, 2] = v[2 * n:]
        fatjet[k] = arr
    fj_valid = np.ones((n, N_FATJET_SLOTS), bool)
    fj_valid[:, 2] = has3

    # AK4 jets: a core jet inside each AK8 jet (common pT fraction for the two leading ones, so the
    # order is kept) and pT-ordered soft emissions below the softest core jet:
    # pT_1 = 30 + Exp(60) truncated below it, pT_(i+1) = 30 + (pT_i - 30) * U(0, 1).
    k_soft = N_JET_SLOTS - N_FATJET_SLOTS
    frac = np.empty((n, N_FATJET_SLOTS))
    frac[:, :2] = rng.uniform(0.75, 0.98, n)[:, None]
    frac[:, 2] = rng.uniform(0.75, 0.98, n)
    core_pt = fatjet["pt"] * frac
    cap = np.where(has3, core_pt[:, 2], core_pt[:, 1]) - 30.0
    n_soft = np.where(cap > 1.0, np.minimum(rng.poisson(1.5, n), k_soft), 0)
    soft_pt = np.empty((n, k_soft))
    u = rng.random((n, k_soft))
    soft_pt[:, 0] = -60.0 * np.log1p(-u[:, 0] * -np.expm1(-np.maximum(cap, 1.0) / 60.0))
    for i in range(1, k_soft):
        soft_pt[:, i] = soft_pt[:, i - 1] * u[:, i]
    soft_pt += 30.0
    jet = {
        "pt": cat([core_pt, soft_pt], axis=1),
        "eta": cat([fatjet["eta"] + 0.05 * rng.standard_normal((n, 3)),
                    rng.uniform(-2.5, 2.5, (n, k_soft))], axis=1),
        "phi": cat([wrap_phi(fatjet["phi"] + 0.05 * rng.standard_normal((n, 3))),
                    rng.uniform(-np.pi, np.pi, (n, k_soft))], axis=1),
        "mass": cat([fatjet["mass"] * rng.uniform(0.2, 0.6, (n, 3)),
                     soft_pt * rng.uniform(0.05, 0.15, (n, k_soft))], axis=1),
        "btagDeepB": cat([fatjet["btagDeepB"], kumaraswamy(rng, 0.8, 12.0, n * k_soft).reshape(n, k_soft)],
                         axis=1),
        "jetId": np.full((n, N_JET_SLOTS), 6.0),
    }
    jet_valid = cat([fj_valid, np.arange(k_soft)[None, :] < n_soft[:, None]], axis=1)

    # MET: resolution term + neutrinos of leptonic decays inside the leading jets
    ht = np.where(jet_valid, jet["pt"], 0.0).sum(axis=1)
    sigma = 0.6 * np.sqrt(ht)
    mex = sigma * rng.standard_normal(n)
    mey = sigma * rng.standard_normal(n)
    for i, (ptj, phij) in enumerate(((pt1, phi1), (pt2, phi2))):
        if lep[i].any():
            nu = np.where(lep[i], ptj * rng.uniform(0.05, 0.3, n), 0.0)
            mex += nu * np.cos(phij)
            mey += nu * np.sin(phij)
    met = np.hypot(mex, mey)
    event = {
        "MET_pt": met,
        "MET_phi": np.arctan2(mey, mex),
        "MET_significance": (met / sigma) ** 2,
        "PV_npvs": rng.poisson(32, n),
        "truth_label": np.full(n, 0 if code == 0 else 1),
        "truth_process": np.full(n, code),
    }
    return Block(fatjet, fj_valid, jet, jet_valid, event, mjj, delta_eta)


def in_window(block: Block, window: tuple[float, float], delta_eta_cut: float = DELTA_ETA_CUT) -> np.ndarray:
    """Events whose two leading AK8 jets pass |Δη| < cut and whose m_jj lies in ``window``."""
    return (block.mjj >= window[0]) & (block.mjj < window[1]) & (block.delta_eta < delta_eta_cut)


def sample_events(
    rng: np.random.Generator,
    n: int,
    signal: Signal | None = None,
    accept: Callable[[Block], np.ndarray] | None = None,
    m_range: tuple[float, float] = M_RANGE,
    block_size: int = 200_000,
) -> Block:
    """``n`` events, keeping only those that ``accept`` (rejection sampling in blocks)."""
    if accept is None:
        return Block.concat([make_block(rng, min(block_size, n - i), signal, m_range)
                             for i in range(0, n, block_size)]) if n > 0 else make_block(rng, 0, signal, m_range)
    parts, have, eff = [], 0, 0.5
    while have < n:
        size = int(np.clip(1.2 * (n - have) / eff, 5000, block_size))
        blk = make_block(rng, size, signal, m_range)
        passed = np.flatnonzero(accept(blk))
        eff = max(len(passed) / size, 1e-3)
        keep = passed[: n - have]
        parts.append(blk.take(keep))
        have += len(keep)
    return Block.concat(parts) if parts else make_block(rng, 0, signal, m_range)


def sample_prefix_until(
    rng: np.random.Generator,
    n_accepted: int,
    signal: Signal,
    accept: Callable[[Block], np.ndarray],
    keep: Callable[[Block], np.ndarray] | None = None,
    block_size: int = 50_000,
) -> Block:
    """The shortest prefix of an i.i.d. event stream holding ``n_accepted`` accepted events.

    Used to inject a signal with a given S/B inside a window while keeping its out-of-window tail;
    events failing ``keep`` (e.g. a trigger) are not part of the stream.
    """
    parts, have = [], 0
    while have < n_accepted:
        blk = make_block(rng, block_size, signal)
        if keep is not None:
            blk = blk.take(np.flatnonzero(keep(blk)))
            if not len(blk):
                continue
        acc = np.cumsum(accept(blk))
        need = n_accepted - have
        if acc[-1] >= need:
            stop = int(np.searchsorted(acc, need)) + 1
            parts.append(blk.take(np.arange(stop)))
            have = n_accepted
        else:
            parts.append(blk)
            have += int(acc[-1])
    return Block.concat(parts) if parts else make_block(rng, 0, signal)


def to_branches(block: Block, run: int, first_event: int, events_per_ls: int = 1000) -> dict:
    """NanoAOD branches of a block: run/luminosityBlock/event, FatJet, Jet, MET_*, PV_npvs, truth."""
    n = len(block)
    evt = np.arange(first_event, first_event + n, dtype=np.uint64)
    ev = block.event
    return {
        "run": np.full(n, run, dtype=np.uint32),
        "luminosityBlock": ((evt - 1) // events_per_ls + 1).astype(np.uint32),
        "event": evt,
        "FatJet": padded_to_collection({k: block.fatjet[k] for k in FATJET_FIELDS}, block.fatjet_valid,
                                       dtypes=INT_FIELDS),
        "Jet": padded_to_collection({k: block.jet[k] for k in JET_FIELDS}, block.jet_valid, dtypes=INT_FIELDS),
        "MET_pt": ev["MET_pt"].astype(np.float32),
        "MET_phi": ev["MET_phi"].astype(np.float32),
        "MET_significance": ev["MET_significance"].astype(np.float32),
        **primary_vertex(np.random.default_rng([first_event, run]), ev["PV_npvs"]),
        "truth_label": ev["truth_label"].astype(np.int32),
        "truth_process": ev["truth_process"].astype(np.int32),
    }

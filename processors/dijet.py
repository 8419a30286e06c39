"""The dijet anomaly-search processor: CMS-style AK8 dijet preselection → per-event features.

Default preselection (the CMS dijet anomaly search): the two leading AK8 jets passing pT > 300 GeV,
|η| < 2.5 and tight jet ID (``jetId & 2``, where the branch exists), |Δη| < 1.3, m_jj > 1200 GeV.
The two selected jets are then ordered by mass: ``j1`` is the lighter (``mj1``), ``j2`` the heavier
(``mj2``), ``delta_m = mj2 - mj1``. N-subjettiness ratios ``tau21 = tau2/tau1`` etc. are 0 where the
denominator is 0. Missing optional branches (``FatJet_nConstituents``, ``FatJet_lsf3``,
``FatJet_btagDeepB``, ``FatJet_msoftdrop``, ``FatJet_tau3/4``, ``FatJet_jetId``, ``genWeight``,
``truth_label``) give NaN (resp. weight 1, truth -1, no jet-ID cut) and are reported once per run.

>>> proc = DijetProcessor(pt_min=300, mjj_min=1200)  # doctest: +SKIP
"""

from __future__ import annotations

import awkward as ak
import numba
import numpy as np

from lhcad.store import DIJET_COLUMNS

from .base import StoreProcessor, branch, has_branch

CUTFLOW = ("all", "two_jets", "delta_eta", "mjj")
# output column suffix -> FatJet field (None: derived)
_JET_FIELDS = {"pt": "pt", "eta": "eta", "phi": "phi", "mass": "mass", "msoftdrop": "msoftdrop",
               "nconst": "nConstituents", "lsf3": "lsf3", "btag": "btagDeepB"}
_OPTIONAL_JET = ("msoftdrop", "tau3", "tau4", "nConstituents", "lsf3", "btagDeepB")


def four_vector_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2) -> np.ndarray:
    """Invariant mass of two massive four-vectors given as (pT, η, φ, m) numpy arrays (float64)."""
    def cart(pt, eta, phi, m):
        pt, eta, phi, m = (np.asarray(a, np.float64) for a in (pt, eta, phi, m))
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        return np.sqrt(px**2 + py**2 + pz**2 + m**2), px, py, pz

    e1, x1, y1, z1 = cart(pt1, eta1, phi1, m1)
    e2, x2, y2, z2 = cart(pt2, eta2, phi2, m2)
    m2_ = (e1 + e2) ** 2 - (x1 + x2) ** 2 - (y1 + y2) ** 2 - (z1 + z2) ** 2
    return np.sqrt(np.maximum(m2_, 0.0))


def jagged_flat(array: ak.Array, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat numpy content) of a one-level jagged array of numbers.

    For NanoEvents collections this reads the buffers directly (no copy of the content); ``offsets``,
    when given, are the collection's already known offsets (all its fields share them).
    """
    layout = ak.to_layout(array)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        content = np.asarray(layout.content.data)
        if offsets is None:
            offsets = np.asarray(layout.offsets.data, dtype=np.int64)
            first = int(offsets[0])
            if first != 0 or len(content) != int(offsets[-1]):
                content = content[first:int(offsets[-1])]
                offsets = offsets - first
            return offsets, content
        if len(content) != int(offsets[-1]) or int(layout.offsets.data[0]) != 0:
            content = content[int(layout.offsets.data[0]):int(layout.offsets.data[-1])]
        return offsets, content
    counts = ak.to_numpy(ak.num(array, axis=1)).astype(np.int64)
    flat = ak.to_numpy(ak.flatten(array, axis=1))
    return (np.concatenate([[0], np.cumsum(counts)]) if offsets is None else offsets), flat


@numba.njit(cache=True, nogil=True)
def select_pairs(offsets, pt, eta, phi, mass, jet_id, id_mask, pt_min, eta_max, deta_max, mjj_min):
    """The dijet preselection in one pass over the FatJet buffers (flat content + offsets from 0).

    Per event: the leading and subleading good jet by pT (good: ``pt > pt_min``, ``|eta| < eta_max``
    and, with ``id_mask != 0``, ``jet_id & id_mask == id_mask``; equal pT keeps the file order, so a
    pT-ordered collection gives its first two good jets), ``|Δη| < deta_max`` and m_jj >
    ``mjj_min``. Comparisons are made in the precision of the branches (float32 thresholds for the
    float32 jet variables); m_jj in float64 as ``m² = m1² + m2² + 2 (E1 E2 - pT1 pT2 cos Δφ - pz1 pz2)``
    with ``pz = pT sinh η`` (sinh from one exp) and ``E = sqrt(pT² + pz² + m²)``: three
    transcendental functions per pair; it agrees with the Cartesian sum (:func:`four_vector_mass`)
    to 1e-12 relative.

    Returns ``(events, light, heavy, mjj, deta, n_two, n_deta)``: of the selected events, their
    indices, the flat indices of the lighter and the heavier of the two jets (the leading jet on a
    mass tie), m_jj and |Δη| (float32); and how many events had two good jets / passed |Δη|.
    """
    n_events = len(offsets) - 1
    events = np.empty(n_events, np.int64)
    light = np.empty(n_events, np.int64)
    heavy = np.empty(n_events, np.int64)
    mjj = np.empty(n_events, np.float32)
    deta = np.empty(n_events, np.float32)
    n_two = 0
    n_deta = 0
    n = 0
    for e in range(n_events):
        lead = -1
        sub = -1
        for j in range(offsets[e], offsets[e + 1]):
            p = pt[j]
            if not (p > pt_min and abs(eta[j]) < eta_max):
                continue
            if id_mask != 0 and (jet_id[j] & id_mask) != id_mask:
                continue
            if lead < 0 or p > pt[lead]:
                sub = lead
                lead = j
            elif sub < 0 or p > pt[sub]:
                sub = j
        if sub < 0:
            continue
        n_two += 1
        d = abs(eta[lead] - eta[sub])
        if not d < deta_max:
            continue
        n_deta += 1
        pt1, pt2 = np.float64(pt[lead]), np.float64(pt[sub])
        m1, m2 = np.float64(mass[lead]), np.float64(mass[sub])
        x1, x2 = np.exp(np.float64(eta[lead])), np.exp(np.float64(eta[sub]))
        pz1, pz2 = 0.5 * pt1 * (x1 - 1.0 / x1), 0.5 * pt2 * (x2 - 1.0 / x2)
        e1 = np.sqrt(pt1 * pt1 + pz1 * pz1 + m1 * m1)
        e2 = np.sqrt(pt2 * pt2 + pz2 * pz2 + m2 * m2)
        dot = pt1 * pt2 * np.cos(np.float64(phi[lead]) - np.float64(phi[sub])) + pz1 * pz2
        q = m1 * m1 + m2 * m2 + 2.0 * (e1 * e2 - dot)
        if q < 0.0:
            q = 0.0
        m = np.sqrt(q)
        if not m > mjj_min:
            continue
        events[n] = e
        if mass[lead] > mass[sub]:
            light[n], heavy[n] = sub, lead
        else:
            light[n], heavy[n] = lead, sub
        mjj[n] = m
        deta[n] = d
        n += 1
    return events[:n], light[:n], heavy[:n], mjj[:n], deta[:n], n_two, n_deta


@numba.njit(cache=True, nogil=True)
def gather_pair(values, light, heavy, out1, out2):
    """``out1[k] = values[light[k]]``, ``out2[k] = values[heavy[k]]`` (cast to the outputs' dtype)."""
    for k in range(len(light)):
        out1[k] = values[light[k]]
        out2[k] = values[heavy[k]]


@numba.njit(cache=True, nogil=True)
def ratio(num, den, out):
    """``out = num / den`` where ``den > 0``, 0 elsewhere, NaN where either is NaN (float32)."""
    for k in range(len(num)):
        a = num[k]
        b = den[k]
        if np.isnan(a) or np.isnan(b):
            out[k] = np.nan
        elif b > 0:
            out[k] = a / b
        else:
            out[k] = 0


class DijetProcessor(StoreProcessor):
    """Dijet preselection and features, written to the ``dijet/`` table (see :data:`DIJET_COLUMNS`).

    Parameters
    ----------
    pt_min, eta_max, delta_eta_max, mjj_min : float
        Preselection thresholds (GeV).
    jet_id : int
        Bit mask required of ``FatJet_jetId`` (2 = tight; 0 = no requirement).
    """

    table = "dijet"
    required = ("run", "luminosityBlock", "event", "FatJet_pt", "FatJet_eta", "FatJet_phi",
                "FatJet_mass", "FatJet_tau1", "FatJet_tau2")

    def __init__(self, pt_min: float = 300.0, eta_max: float = 2.5, delta_eta_max: float = 1.3,
                 mjj_min: float = 1200.0, jet_id: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pt_min = pt_min
        self.eta_max = eta_max
        self.delta_eta_max = delta_eta_max
        self.mjj_min = mjj_min
        self.jet_id = jet_id

    def bulk_branches(self) -> tuple[str, ...]:
        fields = ("pt", "eta", "phi", "mass", "msoftdrop", "tau1", "tau2", "tau3", "tau4", "nConstituents",
                  "lsf3", "btagDeepB", *(("jetId",) if self.jet_id else ()))
        return ("run", "luminosityBlock", "event", "nFatJet", *(f"FatJet_{f}" for f in fields),
                "genWeight", "truth_label")

    def compute(self, ev, meta):
        # Numba kernels on the FatJet content + offsets (no jagged indexing): one pass selects the
        # events and their two jets (:func:`select_pairs`), then each per-jet field is gathered once,
        # for the selected events only (:func:`gather_pair`).
        fj = ev["FatJet"]
        fields = set(fj.fields)
        offsets, pt = jagged_flat(fj["pt"])
        n_events = len(offsets) - 1

        def flat(field: str) -> np.ndarray:
            return jagged_flat(fj[field], offsets)[1]

        id_mask = self.jet_id
        if id_mask and "jetId" not in fields:
            self.missing.add("FatJet_jetId")
            id_mask = 0
        jet_id = flat("jetId") if id_mask else np.zeros(0, np.int32)
        sel_events, light, heavy, mjj, deta, n_two, n_deta = select_pairs(
            offsets, pt, flat("eta"), flat("phi"), flat("mass"), jet_id, int(id_mask),
            np.float32(self.pt_min), np.float32(self.eta_max), np.float32(self.delta_eta_max),
            float(self.mjj_min))
        n = len(sel_events)
        cutflow = {"all": n_events, "two_jets": int(n_two), "delta_eta": int(n_deta), "mjj": n}

        def jets(field: str) -> tuple[np.ndarray, np.ndarray]:
            """(lighter, heavier) jet's ``field`` as float32; NaN if the branch is missing."""
            out1, out2 = np.empty(n, np.float32), np.empty(n, np.float32)
            if field in fields:
                gather_pair(flat(field), light, heavy, out1, out2)
            else:
                self.missing.add(f"FatJet_{field}")
                out1.fill(np.nan)
                out2.fill(np.nan)
            return out1, out2

        cols: dict[str, np.ndarray] = {}
        for name in ("run", "luminosityBlock", "event"):
            cols[name] = ak.to_numpy(ev[name])[sel_events].astype(np.int64)
        cols["mjj"] = mjj
        cols["delta_eta"] = deta
        per_jet = {v: jets(_JET_FIELDS.get(v, v)) for v in ("pt", "eta", "phi", "mass", "msoftdrop",
                                                             "nconst", "lsf3", "btag")}
        taus = [jets(f"tau{k}") for k in (1, 2, 3, 4)]
        for i in (0, 1):
            for v in ("pt", "eta", "phi", "mass", "msoftdrop"):
                cols[f"j{i + 1}_{v}"] = per_jet[v][i]
            for name, num, den in (("tau21", 1, 0), ("tau32", 2, 1), ("tau43", 3, 2)):
                out = np.empty(n, np.float32)
                ratio(taus[num][i], taus[den][i], out)
                cols[f"j{i + 1}_{name}"] = out
            for v in ("nconst", "lsf3", "btag"):
                cols[f"j{i + 1}_{v}"] = per_jet[v][i]
        cols["mj1"], cols["mj2"] = cols["j1_mass"], cols["j2_mass"]
        cols["delta_m"] = cols["mj2"] - cols["mj1"]
        cols["tau21_j1"], cols["tau21_j2"] = cols["j1_tau21"], cols["j2_tau21"]
        # genWeight (MC) and truth_label (generated samples) are absent from real data by design:
        # weight 1 and truth -1 then, without a warning.
        cols["weight"] = (ak.to_numpy(ev["genWeight"])[sel_events].astype(np.float32)
                          if has_branch(ev, "genWeight") else np.ones(n, np.float32))
        cols["truth_label"] = (ak.to_numpy(branch(ev, "truth_label"))[sel_events].astype(np.int32)
                               if has_branch(ev, "truth_label") else np.full(n, -1, np.int32))
        assert set(cols) | {"dataset"} == set(DIJET_COLUMNS), set(DIJET_COLUMNS) ^ set(cols)
        return cols, {"cutflow": cutflow}

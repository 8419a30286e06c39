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


def pair_mass(pt1, eta1, phi1, m1, pt2, eta2, phi2, m2) -> np.ndarray:
    """Invariant mass of two (pT, η, φ, m) four-vectors, as :func:`four_vector_mass` with half the work.

    ``m² = m1² + m2² + 2 (E1 E2 - pT1 pT2 cos Δφ - pz1 pz2)`` with ``pz = pT sinh η`` and
    ``E = sqrt(pT² + pz² + m²)``: three transcendental functions per pair instead of six (measured:
    ~30 ms instead of 70 ms for 380 k pairs; the two agree to 1e-12 relative in float64).
    """
    pt1, eta1, phi1, m1, pt2, eta2, phi2, m2 = (np.asarray(a, np.float64) for a in
                                                (pt1, eta1, phi1, m1, pt2, eta2, phi2, m2))
    x1, x2 = np.exp(eta1), np.exp(eta2)  # sinh via exp: 2x faster than np.sinh here
    pz1, pz2 = 0.5 * pt1 * (x1 - 1.0 / x1), 0.5 * pt2 * (x2 - 1.0 / x2)
    e1 = np.sqrt(pt1 * pt1 + pz1 * pz1 + m1 * m1)
    e2 = np.sqrt(pt2 * pt2 + pz2 * pz2 + m2 * m2)
    dot = pt1 * pt2 * np.cos(phi1 - phi2) + pz1 * pz2
    return np.sqrt(np.maximum(m1 * m1 + m2 * m2 + 2.0 * (e1 * e2 - dot), 0.0))


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


def leading_two(offsets: np.ndarray, pt: np.ndarray, good: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of the leading and subleading ``good`` jet (by pT) of the events with two or more.

    Returns ``(lead, sub, events)``; ``events`` are the event indices (ascending); ``offsets`` start
    at 0. NanoAOD collections are pT-ordered, then this is the first two good jets, found from a
    running count of good jets (no per-jet event index); otherwise the good jets are sorted by
    descending pT within each event (stable: equal pT keeps the file order).
    """
    offsets = np.asarray(offsets, np.int64)
    idx = np.flatnonzero(good)
    rising = pt[1:] > pt[:-1]
    inner = offsets[1:-1]
    rising[inner[(inner > 0) & (inner < len(pt))] - 1] = False  # pairs across an event boundary
    if not np.any(rising):
        count = np.zeros(len(good) + 1, np.int64)
        np.cumsum(good, out=count[1:])
        first = count[offsets[:-1]]  # position in idx of each event's first good jet
        events = np.flatnonzero(count[offsets[1:]] - first >= 2)
        first = first[events]
        return idx[first], idx[first + 1], events
    ev = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[idx]  # event of each good jet
    order = np.lexsort((-pt[idx], ev))
    idx, ev = idx[order], ev[order]
    same = ev[1:] == ev[:-1]
    first = np.flatnonzero(np.concatenate([[True], ~same])) if len(idx) else np.zeros(0, np.int64)
    has2 = np.zeros(len(first), bool)
    ok = first + 1 < len(idx)
    has2[ok] = same[first[ok]]
    first = first[has2]
    return idx[first], idx[first + 1], ev[first]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float32)
    np.divide(num, den, out=out, where=den > 0)
    out[np.isnan(num) | np.isnan(den)] = np.nan
    return out


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

    def compute(self, ev, meta):
        # Flat numpy on the collection's content + offsets (no jagged indexing): only the branches
        # used are materialised, and per-jet fields are gathered once, for the selected events only.
        offsets, pt = jagged_flat(ev["FatJet"]["pt"])
        fj = ev["FatJet"]
        fields = set(fj.fields)
        n_events = len(offsets) - 1

        cache = {"pt": pt}

        def flat(field: str) -> np.ndarray:
            if field not in cache:
                cache[field] = jagged_flat(fj[field], offsets)[1]
            return cache[field]

        good = (pt > self.pt_min) & (np.abs(flat("eta")) < self.eta_max)
        if self.jet_id:
            if "jetId" in fields:
                good &= (flat("jetId") & self.jet_id) == self.jet_id
            else:
                self.missing.add("FatJet_jetId")
        lead, sub, events = leading_two(offsets, pt, good)
        n_two = len(events)

        def take(field: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            """(leading, subleading) float32 values of ``field`` for the events in ``rows``."""
            i1, i2 = (lead, sub) if rows is None else (lead[rows], sub[rows])
            if field in fields:
                values = flat(field)
                return values[i1].astype(np.float32, copy=False), values[i2].astype(np.float32, copy=False)
            self.missing.add(f"FatJet_{field}")
            return np.full(len(i1), np.nan, np.float32), np.full(len(i1), np.nan, np.float32)

        eta = take("eta")
        deta = np.abs(eta[0] - eta[1]).astype(np.float32)
        pass_deta = deta < self.delta_eta_max
        cand = np.flatnonzero(pass_deta)
        kin = {v: take(v, cand) for v in ("pt", "eta", "phi", "mass")}
        mjj = pair_mass(*(kin[v][0] for v in ("pt", "eta", "phi", "mass")),
                         *(kin[v][1] for v in ("pt", "eta", "phi", "mass")))
        pass_mjj = mjj > self.mjj_min
        keep = cand[pass_mjj]  # indices into the two-jet events
        cutflow = {"all": n_events, "two_jets": int(n_two), "delta_eta": int(len(cand)), "mjj": int(len(keep))}

        # order the two jets by mass: j1 = lighter (the leading jet on a tie)
        m_lead, m_sub = (m[pass_mjj] for m in kin["mass"])
        swap = m_lead > m_sub
        i_light = np.where(swap, sub[keep], lead[keep])
        i_heavy = np.where(swap, lead[keep], sub[keep])

        def jet(field: str, i: int) -> np.ndarray:
            if field not in fields:
                self.missing.add(f"FatJet_{field}")
                return np.full(len(keep), np.nan, np.float32)
            return flat(field)[i_light if i == 1 else i_heavy].astype(np.float32, copy=False)

        cols: dict[str, np.ndarray] = {}
        sel_events = events[keep]
        for name in ("run", "luminosityBlock", "event"):
            cols[name] = ak.to_numpy(ev[name])[sel_events].astype(np.int64)
        cols["mjj"] = mjj[pass_mjj].astype(np.float32)
        cols["delta_eta"] = deta[keep]
        for i in (1, 2):
            for v in ("pt", "eta", "phi", "mass", "msoftdrop"):
                cols[f"j{i}_{v}"] = jet(v, i)
            t1, t2, t3, t4 = (jet(k, i) for k in ("tau1", "tau2", "tau3", "tau4"))
            cols[f"j{i}_tau21"] = _ratio(t2, t1)
            cols[f"j{i}_tau32"] = _ratio(t3, t2)
            cols[f"j{i}_tau43"] = _ratio(t4, t3)
            for v in ("nconst", "lsf3", "btag"):
                cols[f"j{i}_{v}"] = jet(_JET_FIELDS[v], i)
        cols["mj1"], cols["mj2"] = cols["j1_mass"], cols["j2_mass"]
        cols["delta_m"] = cols["mj2"] - cols["mj1"]
        cols["tau21_j1"], cols["tau21_j2"] = cols["j1_tau21"], cols["j2_tau21"]
        n = len(keep)
        # genWeight (MC) and truth_label (generated samples) are absent from real data by design:
        # weight 1 and truth -1 then, without a warning.
        cols["weight"] = (ak.to_numpy(ev["genWeight"])[sel_events].astype(np.float32)
                          if has_branch(ev, "genWeight") else np.ones(n, np.float32))
        cols["truth_label"] = (ak.to_numpy(branch(ev, "truth_label"))[sel_events].astype(np.int32)
                               if has_branch(ev, "truth_label") else np.full(n, -1, np.int32))
        assert set(cols) | {"dataset"} == set(DIJET_COLUMNS), set(DIJET_COLUMNS) ^ set(cols)
        return cols, {"cutflow": cutflow}

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
        fj = ev["FatJet"]
        pt, eta = fj["pt"], fj["eta"]
        good = (pt > self.pt_min) & (abs(eta) < self.eta_max)
        if self.jet_id:
            jet_id = self.optional(ev, "FatJet_jetId")
            if jet_id is not None:
                good = good & ((jet_id & self.jet_id) == self.jet_id)
        order = ak.argsort(pt, axis=1, ascending=False)
        idx = order[good[order]]
        two = ak.num(idx, axis=1) >= 2
        idx2 = idx[two][:, :2]  # jagged (exactly 2 each): a regular index would broadcast numpy-style
        sel_fj = fj[two]

        def take(field: str, dtype=np.float32) -> np.ndarray:
            if field in fj.fields:
                return ak.to_numpy(ak.to_regular(sel_fj[field][idx2], axis=1)).astype(dtype).reshape(-1, 2)
            self.missing.add(f"FatJet_{field}")
            return np.full((len(idx2), 2), np.nan, dtype)

        jets = {f: take(field) for f, field in _JET_FIELDS.items()}
        taus = {k: take(k) for k in ("tau1", "tau2", "tau3", "tau4")}
        mjj = four_vector_mass(*(jets[v][:, 0] for v in ("pt", "eta", "phi", "mass")),
                               *(jets[v][:, 1] for v in ("pt", "eta", "phi", "mass")))
        deta = np.abs(jets["eta"][:, 0] - jets["eta"][:, 1]).astype(np.float32)
        pass_deta = deta < self.delta_eta_max
        keep = pass_deta & (mjj > self.mjj_min)
        cutflow = {"all": len(ev), "two_jets": int(len(idx2)), "delta_eta": int(pass_deta.sum()),
                   "mjj": int(keep.sum())}

        # order the two jets by mass: j1 = lighter
        swap = (jets["mass"][:, 0] > jets["mass"][:, 1])[keep]
        first = np.where(swap, 1, 0)
        rows = np.arange(int(keep.sum()))

        def jet(values: np.ndarray, i: int) -> np.ndarray:
            v = values[keep]
            return v[rows, first] if i == 1 else v[rows, 1 - first]

        cols: dict[str, np.ndarray] = {}
        for name in ("run", "luminosityBlock", "event"):
            cols[name] = ak.to_numpy(ev[name][two]).astype(np.int64)[keep]
        cols["mjj"] = mjj[keep].astype(np.float32)
        cols["delta_eta"] = deta[keep]
        for i in (1, 2):
            for v in ("pt", "eta", "phi", "mass", "msoftdrop"):
                cols[f"j{i}_{v}"] = jet(jets[v], i)
            t1, t2, t3, t4 = (jet(taus[k], i) for k in ("tau1", "tau2", "tau3", "tau4"))
            cols[f"j{i}_tau21"] = _ratio(t2, t1)
            cols[f"j{i}_tau32"] = _ratio(t3, t2)
            cols[f"j{i}_tau43"] = _ratio(t4, t3)
            for v in ("nconst", "lsf3", "btag"):
                cols[f"j{i}_{v}"] = jet(jets[v], i)
        cols["mj1"], cols["mj2"] = cols["j1_mass"], cols["j2_mass"]
        cols["delta_m"] = cols["mj2"] - cols["mj1"]
        cols["tau21_j1"], cols["tau21_j2"] = cols["j1_tau21"], cols["j2_tau21"]
        n = len(rows)
        # genWeight (MC) and truth_label (generated samples) are absent from real data by design:
        # weight 1 and truth -1 then, without a warning.
        cols["weight"] = (ak.to_numpy(ev["genWeight"][two]).astype(np.float32)[keep]
                          if has_branch(ev, "genWeight") else np.ones(n, np.float32))
        cols["truth_label"] = (ak.to_numpy(branch(ev, "truth_label")[two]).astype(np.int32)[keep]
                               if has_branch(ev, "truth_label") else np.full(n, -1, np.int32))
        assert set(cols) | {"dataset"} == set(DIJET_COLUMNS), set(DIJET_COLUMNS) ^ set(cols)
        return cols, {"cutflow": cutflow}

"""The L1 / ADC2021 object layout: MET + 4 electrons + 4 muons + 10 jets, each (pT, η, φ).

Objects pass simple L1-like acceptance cuts (ADC2021 defaults: e pT > 3, |η| < 3; μ pT > 3,
|η| < 2.1; jets pT > 15, |η| < 4), are pT-ordered, truncated and zero-padded into a (N, 19, 3)
float32 array (``l1/particles``; slices in :data:`lhcad.store.L1_SLICES`; MET is (pT, 0, φ)).
Options: keep only events with ≥ 1 lepton, and quantise pT/η/φ to ``bits`` over fixed ranges as L1
firmware would (padded zeros stay exactly 0). A missing ``MET`` falls back to ``PuppiMET``.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from lhcad.store import L1_N_OBJECTS, L1_SLICES

from .base import StoreProcessor, branch, has_branch

DEFAULT_CUTS = {"Electron": (3.0, 3.0), "Muon": (3.0, 2.1), "Jet": (15.0, 4.0)}
DEFAULT_BITS = {"pt": 10, "eta": 8, "phi": 8}
RANGES = {"pt": (0.0, 1024.0), "eta": (-5.0, 5.0), "phi": (-np.pi, np.pi)}
_SLOTS = (("Electron", "electron"), ("Muon", "muon"), ("Jet", "jet"))


def quantise(x: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    """Round ``x`` to the nearest of ``2**bits`` equally spaced values in [lo, hi] (clipped)."""
    step = (hi - lo) / (2**bits - 1)
    return (lo + np.round((np.clip(x, lo, hi) - lo) / step) * step).astype(np.float32)


class L1Processor(StoreProcessor):
    """MET + 4 e + 4 μ + 10 jets per event → ``l1/particles`` (+ run, LS, event, truth_label).

    Parameters
    ----------
    lepton_filter : bool
        Keep only events with at least one electron or muon passing the cuts.
    quantise_bits : dict or None
        ``{"pt": 10, "eta": 8, "phi": 8}`` to quantise; None keeps float precision.
    cuts : dict
        Collection -> (pT min, |η| max).
    """

    table = "l1"
    required = ("run", "luminosityBlock", "event", "Electron_pt", "Electron_eta", "Electron_phi",
                "Muon_pt", "Muon_eta", "Muon_phi", "Jet_pt", "Jet_eta", "Jet_phi")

    def __init__(self, lepton_filter: bool = False, quantise_bits: dict | None = None,
                 cuts: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.lepton_filter = lepton_filter
        self.quantise_bits = dict(quantise_bits) if quantise_bits else None
        self.cuts = {k: tuple(v) for k, v in (cuts or DEFAULT_CUTS).items()}

    def _met(self, ev):
        for name in ("MET", "PuppiMET"):
            if has_branch(ev, f"{name}_pt") and has_branch(ev, f"{name}_phi"):
                if name != "MET":
                    self.missing.add("MET_pt")
                return ak.to_numpy(branch(ev, f"{name}_pt")), ak.to_numpy(branch(ev, f"{name}_phi"))
        self.missing.add("MET_pt")
        nan = np.full(len(ev), np.nan, np.float32)
        return nan, nan

    def compute(self, ev, meta):
        n = len(ev)
        parts = np.zeros((n, L1_N_OBJECTS, 3), np.float32)
        met_pt, met_phi = self._met(ev)
        parts[:, 0, 0], parts[:, 0, 2] = met_pt, met_phi
        n_lep = np.zeros(n, np.int64)
        for coll, slot in _SLOTS:
            c = ev[coll]
            pt_min, eta_max = self.cuts[coll]
            c = c[(c["pt"] > pt_min) & (abs(c["eta"]) < eta_max)]
            c = c[ak.argsort(c["pt"], axis=1, ascending=False)]
            sl = L1_SLICES[slot]
            k = sl.stop - sl.start
            if coll != "Jet":
                n_lep += ak.to_numpy(ak.num(c, axis=1))
            for j, field in enumerate(("pt", "eta", "phi")):
                padded = ak.fill_none(ak.pad_none(c[field][:, :k], k, axis=1, clip=True), 0.0)
                parts[:, sl, j] = ak.to_numpy(ak.to_regular(padded, axis=1)).astype(np.float32)
        if self.quantise_bits:
            exists = parts[:, :, 0] != 0  # padded slots stay exactly 0
            exists_eta = exists.copy()
            exists_eta[:, 0] = False  # MET has no eta: keep the placeholder 0
            for j, var in enumerate(("pt", "eta", "phi")):
                lo, hi = RANGES[var]
                q = quantise(parts[:, :, j], lo, hi, int(self.quantise_bits[var]))
                parts[:, :, j] = np.where(exists_eta if var == "eta" else exists, q, 0.0)
        keep = n_lep >= 1 if self.lepton_filter else np.ones(n, bool)
        cols = {"particles": parts[keep]}
        for name in ("run", "luminosityBlock", "event"):
            cols[name] = ak.to_numpy(ev[name]).astype(np.int64)[keep]
        cols["truth_label"] = (ak.to_numpy(branch(ev, "truth_label")).astype(np.int32)[keep]
                               if has_branch(ev, "truth_label") else np.full(int(keep.sum()), -1, np.int32))
        return cols, {"cutflow": {"all": n, "lepton": int(keep.sum())} if self.lepton_filter else {"all": n}}

"""Per-(run, luminosity-section) histograms of monitor elements (MEs) for data-quality monitoring.

Each ME is a NanoAOD branch (jagged collections are flattened: ``Jet_pt`` fills one entry per jet;
``nJet`` is the jet multiplicity) with a regular binning from the config. A chunk fills one
``hist.Hist`` per ME with a (local LS index) × (ME) axis and weight storage, and writes its
``values``/``variances`` per LS; consolidation sums chunks sharing an LS and writes
``lumi/<ME>/{values, variances, run, lumi}`` with the ME axis as UHI metadata (flow bins dropped).

Run 3 NanoAOD has ``PuppiMET`` instead of ``MET``: a missing ``MET_x`` falls back to ``PuppiMET_x``
(one warning); an ME found under neither name stays empty for that chunk (one warning).
"""

from __future__ import annotations

import awkward as ak
import hist
import numpy as np

from lhcad.store import hist_axes_to_uhi

from .base import StoreProcessor, branch, has_branch

DEFAULT_MONITOR_ELEMENTS: dict[str, dict] = {
    "MET_significance": {"bins": 50, "start": 0.0, "stop": 25.0},
    "MET_pt": {"bins": 50, "start": 0.0, "stop": 500.0},
    "Jet_pt": {"bins": 50, "start": 0.0, "stop": 500.0},
    "Jet_eta": {"bins": 50, "start": -5.0, "stop": 5.0},
    "Jet_phi": {"bins": 32, "start": -np.pi, "stop": np.pi},
    "nJet": {"bins": 20, "start": 0.0, "stop": 20.0},
    "PV_npvs": {"bins": 80, "start": 0.0, "stop": 80.0},
}


class LumiProcessor(StoreProcessor):
    """Per-LS histograms of ``monitor_elements`` (name -> ``{"bins", "start", "stop"}``)."""

    table = "lumi"
    required = ("run", "luminosityBlock")

    def __init__(self, monitor_elements: dict[str, dict] | None = None, **kwargs):
        super().__init__(**kwargs)
        mes = DEFAULT_MONITOR_ELEMENTS if monitor_elements is None else monitor_elements
        self.monitor_elements = {name: dict(spec) for name, spec in mes.items()}
        for name, spec in self.monitor_elements.items():
            if set(spec) != {"bins", "start", "stop"} or spec["stop"] <= spec["start"] or spec["bins"] < 1:
                raise TypeError(f"monitor element {name}: needs bins >= 1 and start < stop, got {spec}")

    def axis(self, me: str) -> hist.axis.Regular:
        spec = self.monitor_elements[me]
        return hist.axis.Regular(int(spec["bins"]), float(spec["start"]), float(spec["stop"]), name="x", label=me)

    def n_bins(self, me: str) -> int:
        return int(self.monitor_elements[me]["bins"])

    def axes_uhi(self, me: str) -> list:
        return hist_axes_to_uhi(hist.Hist(self.axis(me)))

    def _values(self, ev, me: str):
        if has_branch(ev, me) or (me.startswith("n") and me[1:] in ev.fields):
            return branch(ev, me)
        self.missing.add(me)
        if me.startswith("MET_") and has_branch(ev, "Puppi" + me):
            return branch(ev, "Puppi" + me)
        return None

    def compute(self, ev, meta):
        run = ak.to_numpy(ev["run"]).astype(np.int64)
        ls = ak.to_numpy(ev["luminosityBlock"]).astype(np.int64)
        pairs, inv = np.unique(np.stack([run, ls], axis=1), axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        out = {"run": pairs[:, 0], "lumi": pairs[:, 1]}
        ls_axis = hist.axis.Integer(0, len(pairs), underflow=False, overflow=False, name="ls")
        for me in self.monitor_elements:
            h = hist.Hist(ls_axis, self.axis(me), storage=hist.storage.Weight())
            x = self._values(ev, me)
            if x is not None:
                if x.ndim > 1:
                    idx = np.repeat(inv, ak.to_numpy(ak.num(x, axis=1)))
                    x = ak.flatten(x)
                else:
                    idx = inv
                h.fill(ls=idx, x=ak.to_numpy(x).astype(np.float64))
            out[f"{me}__values"] = h.values()
            out[f"{me}__variances"] = h.variances()
        return out, {"events_out": len(run), "n_ls": len(pairs)}

"""lhcad generate l1: ADC2021-like SM mixture and BSM signals as NanoAOD (+ the ADC2021 h5 layout)."""

from __future__ import annotations

import json

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot
from scipy.stats import ks_2samp

from cli_helpers import run_cli
from lhcad.generate import l1

# coffea warns about NanoAOD cross-references (Jet_muonIdx1, ...) that these files do not have
pytestmark = pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning")

N_SM = 40_000
N_SIG = 8_000



@pytest.fixture(scope="module")
def l1_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("l1")
    assert run_cli(["-q", "generate", "l1", "--events", str(N_SM), "--signal-events", str(N_SIG),
                    "--blackbox-events", "5000", "--seed", "11", "--out", str(out / "nano"),
                    "--h5", str(out / "adc.h5")]) == 0
    return out


def load(l1_dir, dataset):
    fileset = json.loads((l1_dir / "nano" / "fileset.json").read_text())
    arrs = uproot.concatenate([f"{p}:Events" for p in fileset[dataset]["files"]],
                              ["Electron_pt", "Electron_phi", "Muon_pt", "Muon_phi", "Jet_pt", "Jet_btagDeepB",
                               "MET_pt", "MET_phi", "truth_label", "truth_process"], library="ak")
    lep = ak.concatenate([arrs.Electron_pt, arrs.Muon_pt], axis=1)
    lep_phi = ak.concatenate([arrs.Electron_phi, arrs.Muon_phi], axis=1)
    lead = ak.argmax(lep, axis=1, keepdims=True)
    pt = ak.to_numpy(ak.fill_none(ak.flatten(lep[lead]), 0.0)).astype(float)
    phi = ak.to_numpy(ak.fill_none(ak.flatten(lep_phi[lead]), 0.0)).astype(float)
    met, met_phi = ak.to_numpy(arrs.MET_pt).astype(float), ak.to_numpy(arrs.MET_phi).astype(float)
    jet_pt = arrs.Jet_pt
    return {
        "n_lep": ak.to_numpy(ak.num(lep)),
        "lead_jet": ak.to_numpy(ak.fill_none(ak.max(jet_pt, axis=1), 0.0)).astype(float),
        "n_b": ak.to_numpy(ak.sum(arrs.Jet_btagDeepB > 0.5, axis=1)),
        "lead_lep": pt,
        "mt": np.sqrt(2 * pt * met * (1 - np.cos(phi - met_phi))),
        "met": ak.to_numpy(arrs.MET_pt),
        "n_jet": ak.to_numpy(ak.num(arrs.Jet_pt)),
        "btag": ak.to_numpy(ak.any(arrs.Jet_btagDeepB > 0.5, axis=1)),
        "label": ak.to_numpy(arrs.truth_label),
        "process": ak.to_numpy(arrs.truth_process),
    }


def test_datasets_and_coffea(l1_dir):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    fileset = json.loads((l1_dir / "nano" / "fileset.json").read_text())
    assert set(fileset) == {"sm", "ato4l", "lq_btau", "h0_tautau", "hch_taunu", "blackbox"}
    for ds in fileset.values():
        (path,) = ds["files"]
        ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=NanoAODSchema, entry_stop=500).events()
        assert ak.parameters(ev.Electron[0])["__record__"] == "Electron"
        assert ak.parameters(ev.Muon[0])["__record__"] == "Muon"
        assert ak.parameters(ev.Jet[0])["__record__"] == "Jet"
        # the ADC2021 preselection: at least one lepton above 23 GeV in every event
        lead = np.maximum(ak.to_numpy(ak.fill_none(ak.max(ev.Electron.pt, axis=1), 0)),
                          ak.to_numpy(ak.fill_none(ak.max(ev.Muon.pt, axis=1), 0)))
        assert np.all(lead > 23)
        assert ak.all(ev.Jet.pt[:, :-1] >= ev.Jet.pt[:, 1:])
        assert ak.all(ev.Jet.pt > 15) and ak.all(abs(ev.Muon.eta) < 2.1)


def test_sm_mixture_fractions(l1_dir):
    sm = load(l1_dir, "sm")
    assert len(sm["label"]) == N_SM and np.all(sm["label"] == 0)
    for proc, frac in l1.SM_FRACTIONS.items():
        got = np.mean(sm["process"] == l1.SM_CODES[proc])
        assert abs(got - frac) < 5 * np.sqrt(frac * (1 - frac) / N_SM) + 1e-4, proc
    # pile-up: soft extra jets are present
    assert np.mean(sm["n_jet"]) > 1.5


def test_signals_differ_from_sm_as_documented(l1_dir):
    sm = load(l1_dir, "sm")
    w = {k: v[sm["process"] == l1.SM_CODES["w_lnu"]] for k, v in sm.items()}
    a = load(l1_dir, "ato4l")
    assert np.mean(a["n_lep"] >= 3) > 0.7 and np.mean(sm["n_lep"] >= 3) < 0.01  # A → 4ℓ: many leptons
    # LQ → bτ, pair produced: two b jets (the SM has them only in the 0.3 % tt̄ and b-rich QCD), more
    # jets than the SM (b jets, τ jets, ISR recoil), and τ neutrinos in MET
    lq = load(l1_dir, "lq_btau")
    assert np.mean(lq["n_b"] >= 2) > 0.4 and np.mean(sm["n_b"] >= 2) < 0.05
    assert np.median(lq["n_jet"]) >= np.median(w["n_jet"]) + 2
    assert np.median(lq["met"]) > np.median(sm["met"])
    h0 = load(l1_dir, "h0_tautau")
    # h0 → ττ (gluon fusion): soft leptons (τ decay products) against the W Jacobian peak; the boosted
    # h0 that pass the lepton trigger recoil against a hard ISR jet
    assert np.median(h0["lead_lep"]) < np.median(w["lead_lep"])
    assert ks_2samp(h0["lead_lep"], w["lead_lep"]).pvalue < 1e-6
    assert np.median(h0["lead_jet"]) > 1.5 * np.median(w["lead_jet"])
    assert np.mean(h0["n_b"] >= 1) < 0.1  # no b quarks
    hc = load(l1_dir, "hch_taunu")
    # h±(60) from top decays, tt̄ → (b h±)(b W): b jets, several jets and three-or-more-neutrino MET
    assert np.mean(hc["n_b"] >= 1) > 0.8 and np.median(hc["n_jet"]) >= 4
    assert np.median(hc["met"]) > 1.3 * np.median(w["met"])
    tt = {k: v[sm["process"] == l1.SM_CODES["ttbar"]] for k, v in sm.items()}
    assert len(tt["met"]) > 50 and np.median(hc["met"]) > np.median(tt["met"])  # τν adds neutrinos to tt̄
    for sig, label in (("ato4l", 1), ("lq_btau", 2), ("h0_tautau", 3), ("hch_taunu", 4)):
        assert np.all(load(l1_dir, sig)["label"] == label)


def test_tau_decay_spectra():
    """τ → ℓνν: the V−A lepton spectrum (mean 7/20); τ → Vν: x uniform above m_V²/m_τ²."""
    from scipy.stats import kstest

    x = l1.tau_lepton_fraction(np.random.default_rng(3), 200_000)
    assert abs(x.mean() - 0.35) < 0.003 and x.min() >= 0 and x.max() <= 1
    assert kstest(x, lambda v: (5 * v - 3 * v**3 + v**4) / 3).pvalue > 1e-3
    assert abs(np.mean(x < 0.5) - (2.5 - 3 / 8 + 1 / 16) / 3) < 0.005  # CDF(1/2) = 0.729
    h = l1.tau_hadron_fraction(np.random.default_rng(4), 200_000)
    assert h.min() >= (0.1396 / l1.M_TAU) ** 2 - 1e-9 and h.max() <= 1
    # π share (x below the ρ endpoint only from π; uniform on [0.006, 1]) and the mean
    lo = {m: (m / l1.M_TAU) ** 2 for m, _ in l1.TAU_HADRONIC_MODES}
    want = sum(w * (1 + lo[m]) / 2 for m, w in l1.TAU_HADRONIC_MODES)
    assert abs(h.mean() - want) < 0.003
    assert abs(np.mean(h < lo[0.775]) - 0.17 * (lo[0.775] - lo[0.1396]) / (1 - lo[0.1396])) < 0.004


def test_blackbox_hidden_fraction(l1_dir):
    truth = json.loads((l1_dir / "nano" / "truth.json").read_text())
    hidden = truth["blackbox"]
    bb = load(l1_dir, "blackbox")
    frac = np.mean(bb["label"] > 0)
    assert abs(frac - hidden["hidden_fraction"]) < 5 * np.sqrt(hidden["hidden_fraction"] / 5000)
    assert set(np.unique(bb["label"])) <= {0, l1.SIGNALS[hidden["hidden_signal"]]}


def test_adc2021_h5_layout(l1_dir):
    with h5py.File(l1_dir / "adc.h5") as f:
        p = f["Particles"][...]
    assert p.shape == (N_SM, 19, 4) and p.dtype == np.float32
    assert np.all(p[:, 0, 3] == 1)  # MET class
    for sl, cls in ((slice(1, 5), 2), (slice(5, 9), 3), (slice(9, 19), 4)):
        block = p[:, sl]
        filled = block[..., 0] > 0
        assert np.all(block[..., 3][filled] == cls)
        assert np.all(block[~filled] == 0)  # zero padding
        assert np.all(np.diff(block[..., 0], axis=1) <= 0)  # pT-ordered, padding last
    # the h5 events are the NanoAOD events: same MET and leading jet pT
    sm = uproot.open(json.loads((l1_dir / "nano" / "fileset.json").read_text())["sm"]["files"].popitem()[0])
    met = sm["Events"]["MET_pt"].array(library="np")
    np.testing.assert_allclose(p[:, 0, 0], met, rtol=1e-6)
    for ds in ("ato4l", "lq_btau", "h0_tautau", "hch_taunu", "blackbox"):
        with h5py.File(l1_dir / f"adc_{ds}.h5") as f:
            assert f["Particles"].shape[1:] == (19, 4)


def test_l1_same_seed_same_content(tmp_path):
    args = ["-q", "generate", "l1", "--events", "2000", "--signal-events", "200", "--blackbox-events", "300"]
    assert run_cli([*args, "--seed", "5", "--out", str(tmp_path / "a")]) == 0
    assert run_cli([*args, "--seed", "5", "--out", str(tmp_path / "b")]) == 0
    for name in ("sm_000.root", "blackbox_000.root", "lq_btau_000.root"):
        a = uproot.open(tmp_path / "a" / name)["Events"].arrays(library="ak")
        b = uproot.open(tmp_path / "b" / name)["Events"].arrays(library="ak")
        assert ak.to_list(a[:200]) == ak.to_list(b[:200])
        assert ak.all(a.MET_pt == b.MET_pt)


def test_l1_bad_inputs(tmp_path, capsys):
    assert run_cli(["generate", "l1", "--events", "0", "--out", str(tmp_path / "x")]) == 2
    assert "events" in capsys.readouterr().err
    assert run_cli(["generate", "l1", "--events", "100", "--out", str(tmp_path / "y"),
                    "--h5", str(tmp_path / "missing" / "adc.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "y").exists() or not any((tmp_path / "y").iterdir())

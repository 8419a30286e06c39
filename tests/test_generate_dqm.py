"""lhcad generate dqm: Run 2 runs, brilcalc luminosity CSV, injected faults visible in the per-LS truth."""

from __future__ import annotations

import csv
import json

import awkward as ak
import numpy as np
import pytest
import uproot

from cli_helpers import run_cli

# coffea warns about NanoAOD cross-references (Jet_muonIdx1, ...) that these files do not have
pytestmark = pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning")



@pytest.fixture(scope="module")
def dqm_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dqm")
    assert run_cli(["-q", "generate", "dqm", "--runs", "5", "--bad-runs", "2", "--ls-per-run", "200",
                    "--events-per-ls", "150", "--severity", "1.5", "--seed", "4", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def per_ls(dqm_dir):
    """Per-(run, LS) means of the monitored quantities, recomputed from the NanoAOD files."""
    fileset = json.loads((dqm_dir / "fileset.json").read_text())
    a = uproot.concatenate([f"{p}:Events" for p in fileset["dqm"]["files"]],
                           ["run", "luminosityBlock", "MET_significance", "PV_npvs", "Jet_pt", "Jet_eta",
                            "Jet_phi", "truth_label"], library="ak")
    key = ak.to_numpy(a.run).astype(np.int64) * 10_000 + ak.to_numpy(a.luminosityBlock)
    return a, key


def test_lumi_csv_brilcalc_format(dqm_dir):
    from coffea.lumi_tools import LumiData

    text = (dqm_dir / "lumi.csv").read_text().splitlines()
    assert text[0] == "#Data tag : 19v2 , Norm tag: None"
    assert text[1] == "#run:fill,ls,time,beamstatus,E(GeV),delivered(/pb),recorded(/pb),avgpu,source"
    fields = text[2].split(",")
    assert len(fields) == 9 and ":" in fields[0] and fields[3] == "STABLE BEAMS" and fields[8] == "HFET"
    lumi = LumiData(str(dqm_dir / "lumi.csv"))
    truth = json.loads((dqm_dir / "truth.json").read_text())
    assert lumi._lumidata.shape == (truth["n_ls"], 4)
    runs = np.unique(lumi._lumidata[:, 0]).astype(int)
    assert set(map(str, runs)) == set(truth["runs"])
    assert np.all((runs >= 297046) & (runs <= 306462))  # 2017 run range
    # luminosity decays over each fill-run; recorded <= delivered
    rows = [r for r in csv.reader(t for t in text if not t.startswith("#"))]
    delivered = np.array([float(r[5]) for r in rows])
    recorded = np.array([float(r[6]) for r in rows])
    assert np.all(recorded <= delivered)
    first_run = lumi._lumidata[:, 0] == runs[0]
    d = delivered[first_run]
    assert d[:20].mean() > d[-20:].mean()


def test_events_follow_luminosity_and_truth_matches(dqm_dir, per_ls):
    a, key = per_ls
    truth = json.loads((dqm_dir / "truth.json").read_text())
    rows = list(csv.DictReader(open(dqm_dir / "ls_truth.csv")))
    assert len(rows) == truth["n_ls"]
    counts = dict(zip(*np.unique(key, return_counts=True), strict=True))
    n = np.array([counts.get(int(r["run"]) * 10_000 + int(r["ls"]), 0) for r in rows])
    assert np.array_equal(n, [int(r["events"]) for r in rows])
    lum = np.array([float(r["delivered_pb"]) for r in rows])
    assert np.corrcoef(n, lum)[0, 1] > 0.5  # events per LS follow the luminosity profile
    # per-event truth labels agree with the per-LS truth
    label_of = {int(r["run"]) * 10_000 + int(r["ls"]): r["fault"] for r in rows}
    codes = truth["fault_codes"]
    expected = np.array([codes.get(label_of[k], 0) for k in key[:50_000]])
    assert np.array_equal(expected, ak.to_numpy(a.truth_label[:50_000]))
    bad = [r for r, info in truth["runs"].items() if info["status"] == "BAD"]
    assert len(bad) == 2
    kinds = {f["kind"] for r in bad for f in truth["runs"][r]["faults"]}
    assert kinds == set(codes)  # 2 bad runs x 2 faults: every kind present
    assert truth["n_bad_ls"] == sum(r["fault"] != "none" for r in rows) > 0
    # golden JSON ranges exclude exactly the faulty LSs
    for run, info in truth["runs"].items():
        good = sum(b - a_ + 1 for a_, b in info["good_ls"])
        assert good == info["n_ls"] - info["n_bad_ls"]


def _faulty(truth, kind):
    for run, info in truth["runs"].items():
        for f in info["faults"]:
            if f["kind"] == kind:
                return int(run), f
    raise AssertionError(kind)


def test_faults_visible_per_ls(dqm_dir, per_ls):
    a, key = per_ls
    truth = json.loads((dqm_dir / "truth.json").read_text())
    run_arr = ak.to_numpy(a.run).astype(int)
    ls_arr = ak.to_numpy(a.luminosityBlock).astype(int)

    def split(run, f):
        in_run = run_arr == run
        bad = in_run & (ls_arr >= f["ls"][0]) & (ls_arr <= f["ls"][1])
        return bad, in_run & ~bad

    run, f = _faulty(truth, "met_tail")
    bad, good = split(run, f)
    sig = ak.to_numpy(a.MET_significance)
    assert sig[bad].mean() > 1.5 * sig[good].mean()

    run, f = _faulty(truth, "hot_tower")
    bad, good = split(run, f)
    near = (abs(a.Jet_eta - f["eta"]) < 0.2) & (abs((a.Jet_phi - f["phi"] + np.pi) % (2 * np.pi) - np.pi) < 0.2)
    frac = ak.to_numpy(ak.any(near, axis=1))
    assert frac[bad].mean() > 0.2 and frac[good].mean() < 0.05

    run, f = _faulty(truth, "dead_sector")
    bad, good = split(run, f)
    inside = ((a.Jet_phi - f["phi_low"]) % (2 * np.pi)) < f["width"]
    n_in = ak.to_numpy(ak.sum(inside, axis=1))
    assert n_in[bad].sum() == 0 and n_in[good].mean() > 0.05

    run, f = _faulty(truth, "pileup_spike")
    bad, good = split(run, f)
    npv = ak.to_numpy(a.PV_npvs)
    assert npv[bad].mean() > 1.5 * npv[good].mean()


def test_coffea_opens_dqm(dqm_dir):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    fileset = json.loads((dqm_dir / "fileset.json").read_text())
    (path,) = fileset["dqm"]["files"]
    ev = NanoEventsFactory.from_root({path: "Events"}, schemaclass=NanoAODSchema, entry_stop=1000).events()
    assert ak.parameters(ev.Jet[0])["__record__"] == "Jet"
    assert ak.all(ev.Jet.pt[:, :-1] >= ev.Jet.pt[:, 1:])
    assert ev.MET.significance.ndim == 1 and ev.PV.npvs.ndim == 1


def test_dqm_same_seed_and_bad_input(tmp_path, capsys):
    args = ["-q", "generate", "dqm", "--runs", "3", "--bad-runs", "1", "--ls-per-run", "40", "--events-per-ls", "20"]
    assert run_cli([*args, "--seed", "9", "--out", str(tmp_path / "a")]) == 0
    assert run_cli([*args, "--seed", "9", "--out", str(tmp_path / "b")]) == 0
    for name in ("lumi.csv", "ls_truth.csv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    ea = uproot.open(tmp_path / "a" / "dqm_000.root")["Events"].arrays(library="ak")
    eb = uproot.open(tmp_path / "b" / "dqm_000.root")["Events"].arrays(library="ak")
    assert ak.all(ea.MET_pt == eb.MET_pt) and ak.all(ak.flatten(ea.Jet_pt) == ak.flatten(eb.Jet_pt))
    assert run_cli(["generate", "dqm", "--runs", "2", "--bad-runs", "3", "--out", str(tmp_path / "c")]) == 2
    assert "bad_runs" in capsys.readouterr().err
    assert run_cli(["generate", "dqm", "--faults", "hot_tower,laser", "--out", str(tmp_path / "d")]) == 2
    assert "faults" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    # --events sets the expected total
    assert run_cli([*args[:-2], "--events", "20000", "--seed", "1", "--out", str(tmp_path / "e")]) == 0
    n = json.loads((tmp_path / "e" / "truth.json").read_text())["datasets"]["dqm"]["events"]
    assert abs(n - 20000) < 5 * np.sqrt(20000)
    assert run_cli(["generate", "dqm", "--events", "0", "--out", str(tmp_path / "f")]) == 2

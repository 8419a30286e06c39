"""lhcad generate dijet: NanoAOD format, truth, reproducibility and the physics acceptance checks."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from cli_helpers import run_cli

# coffea warns about NanoAOD cross-references (Jet_muonIdx1, ...) that these files do not have
pytestmark = pytest.mark.filterwarnings("ignore:Missing cross-reference index:RuntimeWarning")

N_QCD = 150_000
N_SIG = 20_000
N_TEST = 20_000



@pytest.fixture(scope="module")
def dijet_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dijet")
    rc = run_cli([
        "-q", "generate", "dijet", "--events", str(N_QCD), "--signal-events", str(N_SIG),
        "--test-events", str(N_TEST), "--extra-background", "4000", "--events-per-file", "60000",
        "--seed", "7", "--out", str(out),
    ])
    assert rc == 0
    return out


def read(paths, stop=None) -> dict[str, np.ndarray]:
    """Two leading AK8 jets + truth, with m_jj recomputed here from the four-vectors."""
    arrs = uproot.concatenate(
        [f"{p}:Events" for p in paths],
        ["FatJet_pt", "FatJet_eta", "FatJet_phi", "FatJet_mass", "FatJet_tau1", "FatJet_tau2", "truth_label"],
        library="ak",
    )
    lead = {k: ak.to_numpy(ak.pad_none(arrs[f"FatJet_{k}"], 2)[:, :2]).astype(float) for k in ("pt", "eta", "phi", "mass", "tau1", "tau2")}
    px = lead["pt"] * np.cos(lead["phi"])
    py = lead["pt"] * np.sin(lead["phi"])
    pz = lead["pt"] * np.sinh(lead["eta"])
    e = np.sqrt(px**2 + py**2 + pz**2 + lead["mass"] ** 2)
    mjj = np.sqrt(e.sum(1) ** 2 - px.sum(1) ** 2 - py.sum(1) ** 2 - pz.sum(1) ** 2)
    order = np.argsort(lead["mass"], axis=1)  # j1 = lighter jet (LHCO convention)
    mass = np.take_along_axis(lead["mass"], order, 1)
    tau21 = np.take_along_axis(lead["tau2"] / lead["tau1"], order, 1)
    return {
        "mjj": mjj, "deta": np.abs(lead["eta"][:, 0] - lead["eta"][:, 1]), "mj1": mass[:, 0],
        "mj2": mass[:, 1], "tau21_j1": tau21[:, 0], "tau21_j2": tau21[:, 1],
        "label": ak.to_numpy(arrs["truth_label"]),
    }


@pytest.fixture(scope="module")
def data(dijet_dir):
    fileset = json.loads((dijet_dir / "fileset.json").read_text())
    return read(list(fileset["data"]["files"]))


def test_files_fileset_truth(dijet_dir):
    fileset = json.loads((dijet_dir / "fileset.json").read_text())
    assert set(fileset) == {"data", "extra_bkg", "test"}
    assert len(fileset["data"]["files"]) == 3  # 150k QCD split by 60k
    for ds in fileset.values():
        for path, tree in ds["files"].items():
            assert tree == "Events" and path.startswith("/") and path.endswith(".root")
    truth = json.loads((dijet_dir / "truth.json").read_text())
    assert truth["datasets"]["data"]["background"] == N_QCD
    assert truth["datasets"]["data"]["signal"] == N_SIG
    assert truth["datasets"]["test"]["signal"] == N_TEST // 5
    assert truth["signal"]["name"] == "wprime_xy" and truth["signal"]["mass"] == 3500
    assert not list(dijet_dir.glob(".*tmp*"))  # no temporary files left


def test_coffea_opens_every_file_typed(dijet_dir):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    for path in sorted(dijet_dir.glob("*.root")):
        events = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema, entry_stop=500).events()
        fj = events.FatJet
        assert ak.parameters(fj[0])["__record__"] == "FatJet"
        assert ak.all(ak.num(fj) >= 2)
        assert ak.all(fj["tau2"] <= fj["tau1"])
        assert ak.all(fj.pt[:, 0] >= fj.pt[:, 1])
        for name in ("msoftdrop", "tau3", "tau4", "nConstituents", "lsf3", "btagDeepB", "jetId"):
            assert name in fj.fields
        assert ak.all(ak.all(events.Jet.pt[:, 1:] <= events.Jet.pt[:, :-1], axis=1))
        assert np.all(ak.to_numpy(events.MET.significance) >= 0)
        assert set(np.unique(ak.to_numpy(events.truth.label))) <= {0, 1}
        assert events.run.type.content.primitive == "uint32"


def test_qcd_mjj_follows_dijet_function(data):
    """4-parameter dijet function fit to the QCD m_jj (|Δη| < 1.3): χ²/ndf < 1.5."""
    from iminuit import Minuit

    m = data["mjj"][(data["label"] == 0) & (data["deta"] < 1.3)]
    edges = np.arange(1600.0, 7001.0, 100.0)
    h, _ = np.histogram(m, edges)
    sub = edges[:-1, None] + np.linspace(0, 100, 9)[None, :]

    x0 = edges[0] / 13000.0

    def expected(lnp0, p1, p2, p3):  # p0 as the log of the density at the first edge: well scaled
        x = sub / 13000.0
        shape = (1 - x) ** p1 / x ** (p2 + p3 * np.log(x)) / ((1 - x0) ** p1 / x0 ** (p2 + p3 * np.log(x0)))
        return np.trapezoid(np.exp(lnp0) * shape, dx=100 / 8, axis=1)

    def nll(lnp0, p1, p2, p3):
        mu = np.maximum(expected(lnp0, p1, p2, p3), 1e-9)
        return 2 * np.sum(mu - h + h * np.log(np.maximum(h, 1e-9) / mu))

    fit = Minuit(nll, lnp0=np.log(h[0] / 100), p1=5.0, p2=2.0, p3=0.0)
    fit.errordef = Minuit.LIKELIHOOD
    fit.migrad()
    assert fit.valid
    mu = expected(*fit.values)
    ok = mu > 5
    chi2_ndf = np.sum(((h - mu) ** 2 / mu)[ok]) / (ok.sum() - 4)
    assert ok.sum() > 30
    assert chi2_ndf < 1.5, chi2_ndf
    # and the spectrum is steeply falling: far fewer events at 5 TeV than at 2 TeV
    assert h[np.searchsorted(edges, 5000)] < 0.05 * h[np.searchsorted(edges, 2000)]


def test_signal_peaks(data):
    sig = data["label"] == 1
    m = data["mjj"][sig & (data["deta"] < 1.3)]
    h, e = np.histogram(m, np.arange(2500.0, 4500.0, 25.0))
    peak = e[np.argmax(h)] + 12.5
    assert abs(peak / 3500 - 1) < 0.03
    core = m[(m > 3000) & (m < 4000)]
    assert 0.03 < np.std(core) / 3500 < 0.07  # ~5 % resolution
    assert np.mean(m < 0.85 * 3500) > np.mean(m > 1.15 * 3500)  # low tail
    for col, truth in (("mj1", 100.0), ("mj2", 500.0)):
        h, e = np.histogram(data[col][sig], np.arange(0.0, 800.0, 10.0))
        assert abs(e[np.argmax(h)] + 5 - truth) / truth < 0.1
        near = data[col][sig][np.abs(data[col][sig] / truth - 1) < 0.3]
        assert 0.05 < np.std(near) / truth < 0.12  # ~8 % jet-mass resolution


def test_supervised_separation_in_sr(dijet_dir):
    """HGB on (mj1, Δm, τ21 j1, τ21 j2) separates the W'→XY signal from QCD in the SR: AUC > 0.95."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    fileset = json.loads((dijet_dir / "fileset.json").read_text())
    t = read(list(fileset["test"]["files"]))
    assert np.all((t["mjj"] > 3300) & (t["mjj"] < 3700) & (t["deta"] < 1.3))
    x = np.column_stack([t["mj1"], t["mj2"] - t["mj1"], t["tau21_j1"], t["tau21_j2"]])
    y = t["label"]
    rng = np.random.default_rng(0)
    train = rng.random(len(y)) < 0.5
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x[train], y[train])
    auc = roc_auc_score(y[~train], clf.predict_proba(x[~train])[:, 1])
    assert auc > 0.95, auc


def test_qcd_features_shift_smoothly_with_mjj(data):
    """QCD jet masses grow and τ21 drifts with m_jj: measurable, but smooth (no steps)."""
    q = (data["label"] == 0) & (data["deta"] < 1.3)
    edges = np.array([1600, 1900, 2200, 2500, 2800, 3100, 3400, 3700, 4000])
    idx = np.digitize(data["mjj"][q], edges) - 1
    means, errs, taus, terrs = [], [], [], []
    for i in range(len(edges) - 1):
        v = data["mj1"][q][idx == i]
        t = data["tau21_j1"][q][idx == i]
        means.append(v.mean())
        errs.append(v.std() / np.sqrt(len(v)))
        taus.append(t.mean())
        terrs.append(t.std() / np.sqrt(len(t)))
    means, errs, taus, terrs = map(np.asarray, (means, errs, taus, terrs))
    assert np.all(np.diff(means) > 0)  # masses grow with m_jj
    assert (means[-1] - means[0]) > 10 * np.hypot(errs[-1], errs[0])
    assert (taus[0] - taus[-1]) > 3 * np.hypot(terrs[0], terrs[-1])  # τ21 drifts down (DDT-like)
    # smooth: a straight line in log m_jj describes each feature within its errors
    x = np.log(0.5 * (edges[1:] + edges[:-1]))
    for y, err in ((means, errs), (taus, terrs)):
        coef = np.polyfit(x, y, 2, w=1 / err)
        chi2 = np.sum(((np.polyval(coef, x) - y) / err) ** 2)
        assert chi2 / (len(x) - 3) < 4.0


def test_extra_background_in_sr(dijet_dir):
    fileset = json.loads((dijet_dir / "fileset.json").read_text())
    eb = read(list(fileset["extra_bkg"]["files"]))
    assert len(eb["mjj"]) == 4000
    assert np.all(eb["label"] == 0)
    assert np.all((eb["mjj"] >= 3300) & (eb["mjj"] < 3700) & (eb["deta"] < 1.3))


def _content(out):
    with uproot.open(out / "data_000.root") as f:
        return f["Events"].arrays(library="np")


def test_same_seed_same_content(tmp_path):
    args = ["-q", "generate", "dijet", "--events", "3000", "--signal-events", "100", "--events-per-file", "2000"]
    assert run_cli([*args, "--seed", "3", "--out", str(tmp_path / "a")]) == 0
    assert run_cli([*args, "--seed", "3", "--out", str(tmp_path / "b")]) == 0
    assert run_cli([*args, "--seed", "4", "--out", str(tmp_path / "c")]) == 0
    a, b, c = (_content(tmp_path / x) for x in "abc")
    assert a.keys() == b.keys()
    for k in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[k], b[k], strict=True)) if a[k].dtype == object \
            else np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["MET_pt"], c["MET_pt"])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["data_000.root", "data_001.root", "fileset.json", "truth.json"]


def test_s_over_b_in_window(tmp_path):
    assert run_cli(["-q", "generate", "dijet", "--events", "60000", "--s-over-b", "0.05", "--seed", "2",
                    "--out", str(tmp_path)]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    d = truth["datasets"]["data"]
    expected_b = 60000 * truth["qcd_window_fraction"]
    assert d["signal_in_sr"] == round(0.05 * expected_b)
    assert abs(d["s_over_b_in_sr"] - 0.05) < 0.05 * 5 / np.sqrt(d["signal_in_sr"])
    assert d["signal"] > d["signal_in_sr"]  # the out-of-window tail is kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "0"], "events"),
        (["--events", "-5"], "events"),
        (["--events", "100", "--signal", "zprime_nope"], "unknown signal 'zprime_nope' (valid: wprime_xy"),
        (["--events", "100", "--signal-events", "-1"], "signal_events"),
        (["--events", "100", "--signal-events", "5", "--s-over-b", "0.1"], "either signal_events or s_over_b"),
    ],
)
def test_bad_input_one_clear_error(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run_cli(["generate", "dijet", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ")
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert run_cli(["generate", "dijet", "--events", "100", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "output directory" in err and str(blocker) in err


def test_failure_leaves_no_partial_files(tmp_path, monkeypatch):
    """A failure after some files were written removes them (temp names, then rename)."""
    from lhcad.config import GenerateDijetConfig
    from lhcad.generate import dijet_output

    calls = {"n": 0}
    real = dijet_output.phys.to_branches

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(dijet_output.phys, "to_branches", failing)
    with pytest.raises(RuntimeError):
        dijet_output.generate_dijet(GenerateDijetConfig(events=3000, events_per_file=1000), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_trigger_option(tmp_path):
    """--trigger-pt keeps events whose leading AK8 jet passes: the LHCO-like turn-on, more SR events."""
    assert run_cli(["-q", "generate", "dijet", "--events", "5000", "--s-over-b", "0.1", "--trigger-pt", "1200",
                    "--seed", "1", "--out", str(tmp_path)]) == 0
    with uproot.open(tmp_path / "data_000.root") as f:
        pt = f["Events"]["FatJet_pt"].array()
    assert ak.all(pt[:, 0] > 1200)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth["qcd_window_fraction"] > 0.08  # vs ≈ 0.023 without the trigger
    assert truth["datasets"]["data"]["signal_in_sr"] == round(0.1 * 5000 * truth["qcd_window_fraction"])

"""coffea processors → Zarr store: executors agree, features match direct uproot reads, real NanoAOD."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
import zarr

from lhcad import store
from lhcad.cli import main
from lhcad.cluster import Cluster
from lhcad.config import ClusterConfig, ConfigError
from lhcad.processors.dijet import four_vector_mass, select_pairs
from lhcad.processors.runner import process
from lhcad.processors.samples import write_nanoaod

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nanoaod"
REAL_FILES = {"dy": "nano_dy.root", "dimuon": "nano_dimuon.root", "tt": "nano_tt_v12.root"}
# real files are small and soft: a loose dijet selection keeps events in them
LOOSE = {"pt_min": 150.0, "eta_max": 2.5, "delta_eta_max": 3.0, "mjj_min": 0.0, "jet_id": 2}
TABLES = ("dijet", "lumi", "l1")


def store_content(path) -> dict:
    """Every array and attribute of a store except provenance (times differ between runs)."""
    root = zarr.open_group(str(path), mode="r")
    out = {}

    def walk(grp, prefix):
        attrs = {k: v for k, v in grp.attrs.items() if k != "provenance"}
        if prefix.startswith("manifest"):
            attrs = {"chunks": [{k: v for k, v in c.items() if k != "uuid"} for c in attrs.get("chunks", [])],
                     "summary": {k: v for k, v in attrs.get("summary", {}).items() if k != "store"}}
        out[prefix + "@attrs"] = json.dumps(attrs, sort_keys=True)
        for name, node in grp.members():
            if isinstance(node, zarr.Group):
                walk(node, f"{prefix}{name}/")
            else:
                out[prefix + name] = node[...]
    walk(root, "")
    return out


def assert_same_store(a, b) -> None:
    ca, cb = store_content(a), store_content(b)
    assert sorted(ca) == sorted(cb)
    for k in ca:
        if isinstance(ca[k], np.ndarray):
            np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
        else:
            assert ca[k] == cb[k], k


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict:
    """Filesets: lhcad's generator output (+ the real NanoAOD files) per processor, and small samples."""
    from lhcad.config import GenerateDijetConfig, GenerateDQMConfig, GenerateL1Config
    from lhcad.generate.dijet_output import generate_dijet
    from lhcad.generate.dqm import generate_dqm
    from lhcad.generate.l1 import generate_l1

    d = tmp_path_factory.mktemp("nano")
    generate_dijet(GenerateDijetConfig(events=3000, signal_events=200, test_events=300, seed=1), d / "dijet")
    generate_dqm(GenerateDQMConfig(runs=2, bad_runs=1, ls_per_run=8, events_per_ls=40, seed=2), d / "dqm")
    generate_l1(GenerateL1Config(events=1500, signal_events=60, blackbox_events=0, seed=3), d / "l1")
    real = {ds: {"files": {str((REAL / f).resolve()): "Events"}} for ds, f in REAL_FILES.items()}
    combined = {}
    for table, kind in (("dijet", "dijet"), ("lumi", "dqm"), ("l1", "l1")):
        gen = json.loads((d / kind / "fileset.json").read_text())
        combined[table] = {**gen, **real}
    a = write_nanoaod(d / "a.root", 2500, seed=1, run=1)
    b = write_nanoaod(d / "b.root", 1500, seed=2, run=2)
    small = {"data": {"files": {a: "Events", b: "Events"}}}
    (d / "small.json").write_text(json.dumps(small))
    return {"dir": d, "combined": combined, "real": real, "small": str(d / "small.json")}


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="1GiB") as lc, Client(lc) as client:
        yield Cluster(ClusterConfig(type="dask-local", workers=2), client)


CHUNKS = {"dijet": 1000, "lumi": 300, "l1": 500}


@pytest.fixture(scope="module")
def stores(samples, dask_cluster, tmp_path_factory) -> dict:
    """Every processor on generated + real inputs with iterative, futures and Dask executors."""
    d = tmp_path_factory.mktemp("stores")
    out = {}
    for table in TABLES:
        for name, cluster in (("iterative", ClusterConfig(type="iterative")),
                              ("futures", ClusterConfig(type="futures", workers=2)),
                              ("dask", dask_cluster)):
            path = d / f"{table}-{name}.zarr"
            summary = process(table, samples["combined"][table], str(path), cluster=cluster,
                              chunksize=CHUNKS[table], options=LOOSE if table == "dijet" else {})
            out[table, name] = (path, summary)
    return out


@pytest.mark.parametrize("table", TABLES)
def test_executors_give_the_same_store(table, stores):
    for name in ("iterative", "futures", "dask"):
        summary = stores[table, name][1]
        assert summary["events_skipped"] == 0 and summary["chunks_run"] == summary["chunks"] > 3
    ref = stores[table, "iterative"][0]
    assert_same_store(ref, stores[table, "futures"][0])
    assert_same_store(ref, stores[table, "dask"][0])
    path = stores[table, "dask"][0]
    root = zarr.open_group(str(path), mode="r")
    assert not (path / store.PARTS_DIR).exists()  # parts cleaned up after consolidation
    prov = root.attrs["provenance"]["process"][table]
    assert prov["chunksize"] == CHUNKS[table] and all(r["uuid"] for r in prov["inputs"])
    assert {Path(r["file"]).name for r in prov["inputs"]} >= set(REAL_FILES.values())
    man = store.read_manifest(root, table)
    assert sum(c["events_in"] for c in man["chunks"]) == man["summary"]["events_processed"]
    if table != "lumi":
        assert store.n_rows(root, table) > 0
        assert store.dataset_names(root, table)[-3:] == list(REAL_FILES)


def _events_of(fileset) -> list:
    """(dataset code, arrays) of every file in fileset order, read directly with uproot."""
    if isinstance(fileset, str):
        fileset = json.loads(Path(fileset).read_text())
    out = []
    for code, (_ds, spec) in enumerate(fileset.items()):
        files = spec["files"] if isinstance(spec, dict) else spec
        for f in files:
            tree = uproot.open(f)["Events"]
            arr = tree.arrays(filter_name=["run", "luminosityBlock", "event", "FatJet_*", "nFatJet", "Jet_pt",
                                           "Jet_eta", "Jet_phi", "nJet", "Electron_pt", "Electron_eta",
                                           "Electron_phi", "Muon_pt", "Muon_eta", "Muon_phi", "MET_pt",
                                           "MET_phi", "MET_significance", "PV_npvs", "truth_label"])
            out.append((code, arr))
    return out


def _expected_dijet(fileset, cuts) -> np.ndarray:
    """The selection and features recomputed event by event from the raw uproot branches."""
    rows = []
    names = ("pt", "eta", "phi", "mass", "tau1", "tau2", "jetId")
    for code, a in _events_of(fileset):
        fj = {v: a[f"FatJet_{v}"].tolist() for v in names}  # plain lists: fast per-event access
        events = a.event.tolist()
        for i, ev in enumerate(events):
            pt, eta, phi, mass, tau1, tau2, jid = (np.asarray(fj[v][i], np.float64) for v in names)
            ok = (pt > cuts["pt_min"]) & (np.abs(eta) < cuts["eta_max"]) & ((jid.astype(int) & 2) == 2)
            sel = np.flatnonzero(ok)[np.argsort(-pt[ok], kind="stable")][:2]
            if len(sel) < 2 or abs(eta[sel[0]] - eta[sel[1]]) >= cuts["delta_eta_max"]:
                continue
            j0, j1 = ((pt[k], eta[k], phi[k], mass[k]) for k in sel)
            mjj = float(four_vector_mass(*j0, *j1))  # recomputed from the four-vectors
            if mjj <= cuts["mjj_min"]:
                continue
            light, heavy = sorted(sel, key=lambda k: mass[k])
            rows.append((code, int(ev), mjj, mass[light], tau2[light] / tau1[light], tau2[heavy] / tau1[heavy],
                         mass[heavy] - mass[light]))
    return np.array(rows)


def _check_dijet(got, exp, delta_eta_max):
    assert len(exp) == len(got["event"]) > 5
    np.testing.assert_array_equal(got["dataset"], exp[:, 0])
    np.testing.assert_array_equal(got["event"], exp[:, 1].astype(np.int64))
    np.testing.assert_allclose(got["mjj"], exp[:, 2], rtol=2e-6)
    np.testing.assert_allclose(got["mj1"], exp[:, 3], rtol=1e-6)
    np.testing.assert_allclose(got["tau21_j1"], exp[:, 4], rtol=1e-5)  # tau2/tau1 of the raw branches
    np.testing.assert_allclose(got["tau21_j2"], exp[:, 5], rtol=1e-5)
    np.testing.assert_allclose(got["delta_m"], exp[:, 6], rtol=1e-5, atol=1e-3)
    assert np.all(got["mj1"] <= got["mj2"]) and np.all(got["delta_eta"] < delta_eta_max)


def test_dijet_features_match_uproot(samples, stores):
    """Generated + real NanoAOD (loose cuts), read back from the store vs uproot."""
    got = store.read_columns(str(stores["dijet", "iterative"][0]), "dijet")
    fileset = samples["combined"]["dijet"]
    _check_dijet(got, _expected_dijet(fileset, LOOSE), LOOSE["delta_eta_max"])
    names = list(fileset)
    real = np.isin(got["dataset"], [names.index(n) for n in REAL_FILES])
    assert real.sum() > 5 and np.all(got["truth_label"][real] == -1)
    assert set(np.unique(got["truth_label"][~real])) <= {0, 1}
    # nano_dimuon is older NanoAOD without FatJet_nConstituents: NaN there; v12 has it
    assert np.isnan(got["j1_nconst"][got["dataset"] == names.index("dimuon")]).all()
    assert np.isfinite(got["j1_nconst"][got["dataset"] == names.index("tt")]).all()
    assert stores["dijet", "iterative"][1]["missing_branches"] == ["FatJet_lsf3", "FatJet_nConstituents"]


def test_select_pairs_matches_a_per_event_loop():
    """The dijet selection kernel against a per-event loop: leading two good jets by pT (stable on
    ties, pT-ordered or not), jet ID, |Δη| in float32, m_jj from the Cartesian four-vector sum."""
    rng = np.random.default_rng(5)
    cuts = (np.float32(150), np.float32(2.0), np.float32(1.3), 400.0)

    def loop(offsets, pt, eta, phi, mass, jid, mask):
        rows, n_two, n_deta = [], 0, 0
        for e in range(len(offsets) - 1):
            good = [j for j in range(offsets[e], offsets[e + 1]) if pt[j] > cuts[0] and abs(eta[j]) < cuts[1]
                    and (jid[j] & mask) == mask]
            jets = sorted(good, key=lambda j: -pt[j])[:2]  # stable: equal pT keeps the file order
            if len(jets) < 2:
                continue
            n_two += 1
            a, b = jets
            deta = np.float32(abs(eta[a] - eta[b]))
            if not deta < cuts[2]:
                continue
            n_deta += 1
            mjj = float(four_vector_mass(pt[a], eta[a], phi[a], mass[a], pt[b], eta[b], phi[b], mass[b]))
            if mjj > cuts[3]:
                light, heavy = (b, a) if mass[a] > mass[b] else (a, b)
                rows.append((e, light, heavy, mjj, deta))
        return rows, n_two, n_deta

    for trial in range(60):
        counts = rng.integers(0, 6, rng.integers(0, 40))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n = int(offsets[-1])
        # ties (few distinct pT values) and, in every other trial, pT-ordered collections as in NanoAOD
        pt = rng.choice(np.array([100, 200, 300, 400, 800], np.float32), n)
        if trial % 2:
            pt = np.concatenate([np.sort(pt[a:b])[::-1] for a, b in zip(offsets[:-1], offsets[1:])] + [pt[:0]])
        eta = rng.uniform(-2.5, 2.5, n).astype(np.float32)
        phi = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
        mass = rng.choice(np.array([20, 80, 150, 400], np.float32), n)  # mass ties: leading jet is j1
        jid = rng.choice(np.array([0, 2, 6], np.int32), n)
        mask = 2 * (trial % 3 != 0)
        got = select_pairs(offsets, pt, eta, phi, mass, jid, mask, *cuts)
        rows, n_two, n_deta = loop(offsets, pt, eta, phi, mass, jid, mask)
        assert (got[5], got[6]) == (n_two, n_deta)
        exp = np.array(rows).reshape(-1, 5)
        for k in range(3):
            np.testing.assert_array_equal(got[k], exp[:, k].astype(np.int64))
        np.testing.assert_allclose(got[3], exp[:, 3], rtol=1e-6)
        np.testing.assert_array_equal(got[4], exp[:, 4].astype(np.float32))


def test_dijet_default_cms_selection(samples, tmp_path):
    gen = json.loads((samples["dir"] / "dijet" / "fileset.json").read_text())
    out = tmp_path / "s.zarr"
    s = process("dijet", gen, str(out), chunksize=1500)
    cuts = {"pt_min": 300.0, "eta_max": 2.5, "delta_eta_max": 1.3, "mjj_min": 1200.0}
    _check_dijet(store.read_columns(str(out), "dijet"), _expected_dijet(gen, cuts), 1.3)
    root = zarr.open_group(str(out), mode="r")
    assert root["dijet"].attrs["datasets"] == list(gen)
    flow = root["dijet"].attrs["cutflow"]["data"]
    assert flow["all"] == s["events_processed"] - root["dijet"].attrs["cutflow"]["test"]["all"]
    assert flow["all"] >= flow["two_jets"] >= flow["delta_eta"] >= flow["mjj"] > 0


def test_lumi_histograms_match_uproot(samples, stores):
    from lhcad.processors.lumi import DEFAULT_MONITOR_ELEMENTS as mes

    root = zarr.open_group(str(stores["lumi", "iterative"][0]), mode="r")
    assert root["lumi"].attrs["monitor_elements"] == list(mes)
    arrays = [a for _, a in _events_of(samples["combined"]["lumi"])]
    run = np.concatenate([np.asarray(a.run) for a in arrays]).astype(np.int64)
    ls = np.concatenate([np.asarray(a.luminosityBlock) for a in arrays]).astype(np.int64)
    flat = {me: np.concatenate([np.asarray(a[me]) for a in arrays]) for me in ("MET_significance", "MET_pt", "PV_npvs")}
    flat["nJet"] = np.concatenate([np.asarray(a.nJet) for a in arrays])
    jets = ak.concatenate([ak.zip({v: a[f"Jet_{v}"] for v in ("pt", "eta", "phi")}) for a in arrays])
    for me, spec in mes.items():
        g = root["lumi"][me]
        edges = np.linspace(spec["start"], spec["stop"], spec["bins"] + 1)
        axis = g.attrs["axes"][0]
        assert (axis["type"], axis["bins"], axis["lower"], axis["upper"]) == ("regular", spec["bins"], spec["start"], spec["stop"])
        vals = g["values"][...]
        np.testing.assert_array_equal(vals, g["variances"][...])  # unweighted: variance = count
        assert vals.shape == (g["run"].shape[0], spec["bins"])
        for i, (r, lumi) in enumerate(zip(g["run"][...], g["lumi"][...])):
            m = (run == r) & (ls == lumi)
            x = flat[me][m] if me in flat else ak.to_numpy(ak.flatten(jets[me[4:]][m]))
            x = x[x < spec["stop"]]  # hist: upper edge is overflow (np.histogram closes the last bin)
            np.testing.assert_array_equal(vals[i], np.histogram(x, edges)[0], err_msg=f"{me} run {r} LS {lumi}")
    pairs = sorted(set(zip(run.tolist(), ls.tolist())))
    assert list(zip(root["lumi/Jet_pt/run"][...].tolist(), root["lumi/Jet_pt/lumi"][...].tolist())) == pairs
    assert root["lumi"].attrs["n_ls"] == len(pairs) > 16


def test_l1_objects_match_uproot(samples, stores):
    got = store.read_columns(str(stores["l1", "iterative"][0]), "l1")
    p = got["particles"]
    arrays = [a for _, a in _events_of(samples["combined"]["l1"])]
    assert p.shape == (sum(len(a) for a in arrays), 19, 3) and p.dtype == np.float32
    i = 0
    specs = (("Electron", slice(1, 5), 4, 3, 3), ("Muon", slice(5, 9), 4, 3, 2.1), ("Jet", slice(9, 19), 10, 15, 4))
    for a in arrays:
        lists = {f"{c}_{v}": a[f"{c}_{v}"].tolist() for c, *_ in specs for v in ("pt", "eta", "phi")}
        np.testing.assert_allclose(p[i:i + len(a), 0, 0], np.asarray(a.MET_pt), rtol=1e-6)
        np.testing.assert_allclose(p[i:i + len(a), 0, 2], np.asarray(a.MET_phi), rtol=1e-6)
        assert np.all(p[i:i + len(a), 0, 1] == 0)
        for k in range(len(a)):
            for coll, sl, n, ptmin, etamax in specs:
                pt, eta, phi = (np.asarray(lists[f"{coll}_{v}"][k], np.float32) for v in ("pt", "eta", "phi"))
                ok = (pt > ptmin) & (np.abs(eta) < etamax)
                order = np.argsort(-pt[ok], kind="stable")[:n]
                exp = np.zeros((n, 3), np.float32)
                exp[:len(order)] = np.stack([pt[ok][order], eta[ok][order], phi[ok][order]], axis=1)
                np.testing.assert_array_equal(p[i + k, sl], exp)
        i += len(a)
    np.testing.assert_array_equal(got["event"], np.concatenate([np.asarray(a.event) for a in arrays]))


def test_l1_lepton_filter_and_quantisation(samples, tmp_path):
    full, filt = tmp_path / "a.zarr", tmp_path / "b.zarr"
    process("l1", samples["small"], str(full), chunksize=2000)
    process("l1", samples["small"], str(filt), chunksize=2000,
            options={"lepton_filter": True, "quantise_bits": {"pt": 10, "eta": 8, "phi": 8}})
    a, b = store.read_columns(str(full), "l1"), store.read_columns(str(filt), "l1")
    has_lep = (a["particles"][:, 1:9, 0] > 0).any(axis=1)
    assert 0 < len(b["event"]) == has_lep.sum() < len(a["event"])
    np.testing.assert_array_equal(b["event"], a["event"][has_lep])
    q, x = b["particles"], a["particles"][has_lep]
    assert np.all(q[x == 0] == 0)  # padding and MET eta stay exactly 0
    assert np.all(x[(q == 0) & (x != 0)] < 0.5)  # only a MET below half an LSB rounds to 0
    step = {0: 1024 / 1023, 1: 10 / 255, 2: 2 * np.pi / 255}
    for j, lo in ((0, 0.0), (1, -5.0), (2, -np.pi)):
        filled = x[..., 0] > 0
        if j == 1:
            filled[:, 0] = False  # MET eta is a placeholder
        err = np.abs(q[..., j][filled] - np.clip(x[..., j][filled], lo, None))
        assert err.max() <= step[j] / 2 + 1e-4  # within half an LSB
        levels = (q[..., j][filled] - lo) / step[j]
        np.testing.assert_allclose(levels, np.round(levels), atol=2e-3)


def test_missing_optional_branches_nan_and_one_warning(samples, tmp_path, caplog):
    d = tmp_path
    old = write_nanoaod(d / "old.root", 1500, seed=7, drop=("FatJet_nConstituents", "FatJet_lsf3"))
    new = write_nanoaod(d / "new.root", 1500, seed=8)
    fileset = {"data": {"files": {old: "Events", new: "Events"}}}
    with caplog.at_level(logging.WARNING, logger="lhcad"):
        s = process("dijet", fileset, str(d / "s.zarr"), chunksize=300)
    assert s["missing_branches"] == ["FatJet_lsf3", "FatJet_nConstituents"]
    warned = [r.getMessage() for r in caplog.records if "FatJet_lsf3" in r.getMessage()]
    assert len(warned) == 1
    cols = store.read_columns(str(d / "s.zarr"), "dijet")
    from_old = cols["event"] < 8 * 10_000_000
    assert from_old.any() and (~from_old).any()
    assert np.isnan(cols["j1_lsf3"][from_old]).all() and np.isnan(cols["j2_nconst"][from_old]).all()
    assert np.isfinite(cols["j1_lsf3"][~from_old]).all()


def test_puppimet_replaces_missing_met(tmp_path, caplog):
    f = tmp_path / "run3.root"
    write_nanoaod(f, 800, seed=9)
    # Run-3-like: PuppiMET_* instead of MET_* (rewrite the tree with renamed branches)
    arrays = uproot.open(f)["Events"].arrays(how=dict)
    ref_pt = np.asarray(arrays["MET_pt"])
    with uproot.recreate(tmp_path / "puppi.root") as fout:
        fout.mktree("Events", {"run": "uint32", "luminosityBlock": "uint32", "event": "uint64",
                               "PuppiMET_pt": "float32", "PuppiMET_phi": "float32", "Jet": ak.zip(
                                   {k[4:]: arrays[k] for k in ("Jet_pt", "Jet_eta", "Jet_phi")}).type,
                               "Electron": ak.zip({k[9:]: arrays[k] for k in ("Electron_pt", "Electron_eta", "Electron_phi")}).type,
                               "Muon": ak.zip({k[5:]: arrays[k] for k in ("Muon_pt", "Muon_eta", "Muon_phi")}).type})
        fout["Events"].extend({
            "run": arrays["run"], "luminosityBlock": arrays["luminosityBlock"], "event": arrays["event"],
            "PuppiMET_pt": arrays["MET_pt"], "PuppiMET_phi": arrays["MET_phi"],
            "Jet": ak.zip({k[4:]: arrays[k] for k in ("Jet_pt", "Jet_eta", "Jet_phi")}),
            "Electron": ak.zip({k[9:]: arrays[k] for k in ("Electron_pt", "Electron_eta", "Electron_phi")}),
            "Muon": ak.zip({k[5:]: arrays[k] for k in ("Muon_pt", "Muon_eta", "Muon_phi")})})
    fs = {"run3": [str(tmp_path / "puppi.root")]}
    with caplog.at_level(logging.WARNING, logger="lhcad"):
        s = process("l1", fs, str(tmp_path / "s.zarr"), chunksize=400)
        lum = process("lumi", fs, str(tmp_path / "s.zarr"), chunksize=400,
                      options={"monitor_elements": {"MET_pt": {"bins": 10, "start": 0, "stop": 200},
                                                    "MET_significance": {"bins": 10, "start": 0, "stop": 10}}})
    p = store.read_columns(str(tmp_path / "s.zarr"), "l1")["particles"]
    np.testing.assert_allclose(p[:, 0, 0], ref_pt)
    assert s["missing_branches"] == ["MET_pt"] and lum["missing_branches"] == ["MET_pt", "MET_significance"]
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root["lumi/MET_pt/values"][...].sum() == np.histogram(ref_pt, np.linspace(0, 200, 11))[0].sum()
    assert root["lumi/MET_significance/values"][...].sum() == 0  # no such branch anywhere: empty, warned
    assert sum("MET_significance" in r.getMessage() for r in caplog.records) == 1


def test_cli_process_and_errors(samples, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    with pytest.raises(SystemExit) as ok:
        main(["-q", "process", "dijet", "--fileset", samples["small"], "--out", str(out), "--chunksize", "2000",
              "--summary-json", str(tmp_path / "s.json")])
    assert ok.value.code == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["events_processed"] == 4000 and store.n_rows(str(out), "dijet") == s["rows"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": {"files": {str(tmp_path / "nope.root"): "Events"}}}))
    with pytest.raises(SystemExit) as exc:
        main(["process", "dijet", "--fileset", str(bad), "--out", str(out)])
    assert exc.value.code == 2
    assert "nope.root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["process", "l1", "--fileset", samples["small"], "--out", str(out), "--executor", "spark"])
    assert exc.value.code == 2
    # root:// URLs are accepted in a fileset (not reached here: only the normalisation is checked)
    from lhcad.processors.runner import load_fileset

    fs = load_fileset({"od": ["root://eospublic.cern.ch//eos/opendata/cms/x.root"]})
    assert fs["od"]["files"] == {"root://eospublic.cern.ch//eos/opendata/cms/x.root": "Events"}
    with pytest.raises(ConfigError, match="unknown"):
        process("jets", samples["small"], str(out))


def test_dask_worker_killed_mid_run(samples, dask_cluster, tmp_path):
    """SIGKILL a Dask worker while chunks run: its tasks are redone and the store equals a clean run."""
    import os
    import signal
    import threading
    import time

    fileset = samples["small"]
    clean, out = tmp_path / "clean.zarr", tmp_path / "killed.zarr"
    process("dijet", fileset, str(clean), chunksize=500)
    client = dask_cluster.client
    pids = client.run(os.getpid)
    result: dict = {}
    errors: list = []

    def run():
        try:
            result.update(process("dijet", fileset, str(out), cluster=dask_cluster, chunksize=500))
        except Exception as exc:  # noqa: BLE001 - re-raised in the test thread below
            errors.append(exc)

    th = threading.Thread(target=run)
    th.start()
    deadline = time.time() + 300
    while not list(out.glob("_parts/*/*.part")):
        assert th.is_alive() and time.time() < deadline, "run ended before any part was committed"
        time.sleep(0.01)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    th.join(timeout=600)
    assert not errors, errors
    assert result["chunks_run"] == result["chunks"] == 8
    assert victim not in client.run(os.getpid).values()  # the nanny replaced the killed worker
    assert_same_store(clean, out)

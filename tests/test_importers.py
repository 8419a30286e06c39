"""Importers of the public AD benchmarks: format-exact LHCO R&D and ADC2021 files → Zarr store.

Each test writes small files in the exact public layouts (pandas HDF5 tables with the LHCO columns,
h5py ``Particles`` (N, 19, 4), the (N, 57) example-code layout), imports them and compares the
stored columns with values recomputed independently (four-vectors via ``vector``).
"""

from __future__ import annotations

import hashlib
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest
import vector
import zarr

from lhcad import store
from lhcad.importers import ImporterError, import_adc2021, import_lhco
from lhcad.importers.lhco import LHCO_COLUMNS

# ------------------------------------------------------------------------------------------- LHCO


def lhco_frame(n: int, seed: int = 0, label: bool = True) -> pd.DataFrame:
    """A frame with the LHCO R&D feature columns, jets in random mass order, some τ1 = 0."""
    rng = np.random.default_rng(seed)
    cols = {}
    for i in (1, 2):
        pt = rng.uniform(1200, 2500, n)
        phi = rng.uniform(-np.pi, np.pi, n) + (np.pi if i == 2 else 0.0)
        eta = rng.normal(0, 1.2, n)
        cols[f"pxj{i}"] = pt * np.cos(phi)
        cols[f"pyj{i}"] = pt * np.sin(phi)
        cols[f"pzj{i}"] = pt * np.sinh(eta)
        cols[f"mj{i}"] = rng.uniform(30, 700, n)
        t1 = rng.uniform(0.05, 0.8, n)
        t2 = t1 * rng.uniform(0.1, 1.0, n)
        t3 = t2 * rng.uniform(0.1, 1.0, n)
        cols[f"tau1j{i}"], cols[f"tau2j{i}"], cols[f"tau3j{i}"] = t1, t2, t3
    for c in ("tau1j1", "tau2j1", "tau3j1"):  # a single-constituent jet: all τN = 0
        cols[c][3] = 0.0
    frame = pd.DataFrame({c: cols[c] for c in LHCO_COLUMNS})
    if label:
        frame["label"] = (rng.random(n) < 0.2).astype(np.float64)  # float, as in the public file
    return frame


def expected_dijet(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The dijet features, recomputed with ``vector`` (independent of the importer's arithmetic)."""
    jets = [
        vector.array({"px": frame[f"pxj{i}"].to_numpy(), "py": frame[f"pyj{i}"].to_numpy(),
                      "pz": frame[f"pzj{i}"].to_numpy(), "mass": frame[f"mj{i}"].to_numpy()})
        for i in (1, 2)
    ]
    mjj = (jets[0] + jets[1]).mass
    col = {c: frame[c].to_numpy() for c in frame.columns}
    out = {"mjj": mjj, **{k: [] for k in ("mj1", "mj2", "tau21_j1", "tau21_j2", "j1_pt", "j1_eta", "j1_phi",
                                          "j2_pt", "j2_eta", "j2_phi", "j1_tau32", "j2_tau32")}}
    for r in range(len(frame)):
        order = (1, 2) if col["mj1"][r] <= col["mj2"][r] else (2, 1)  # lighter first
        for slot, i in zip((1, 2), order):
            t1, t2, t3 = col[f"tau1j{i}"][r], col[f"tau2j{i}"][r], col[f"tau3j{i}"][r]
            out[f"mj{slot}"].append(col[f"mj{i}"][r])
            out[f"tau21_j{slot}"].append(t2 / t1 if t1 > 0 else 0.0)
            out[f"j{slot}_tau32"].append(t3 / t2 if t2 > 0 else 0.0)
            out[f"j{slot}_pt"].append(jets[i - 1].pt[r])
            out[f"j{slot}_eta"].append(jets[i - 1].eta[r])
            out[f"j{slot}_phi"].append(jets[i - 1].phi[r])
    out = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    out["delta_m"] = out["mj2"] - out["mj1"]
    out["delta_eta"] = np.abs(out["j1_eta"] - out["j2_eta"])
    return out


def test_lhco_table_import_matches_recomputed_features(tmp_path):
    frame = lhco_frame(500)
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    frame.to_hdf(src, key="df", mode="w", format="table")
    summary = import_lhco([src], str(tmp_path / "s.zarr"), chunk_rows=180)  # three chunks

    got = store.read_columns(str(tmp_path / "s.zarr"), "dijet")
    assert set(got) == set(store.DIJET_COLUMNS)
    # the processors' dtypes: float32 features, int64 ids, int32 codes
    assert got["mjj"].dtype == np.float32 and got["event"].dtype == np.int64
    assert got["dataset"].dtype == np.int32 and got["truth_label"].dtype == np.int32
    assert summary["rows"] == summary["n_rows"] == 500
    exp = expected_dijet(frame)
    # differences of two stored float32 columns are taken in float32 (as the processor takes them):
    # their error scales with the operands
    eps32 = float(np.finfo(np.float32).eps)
    atol = {"delta_m": 2 * eps32 * exp["mj2"].max(),
            "delta_eta": 2 * eps32 * np.abs(np.r_[exp["j1_eta"], exp["j2_eta"]]).max()}
    for name, values in exp.items():
        np.testing.assert_allclose(got[name], values, rtol=2e-6, atol=atol.get(name, 1e-5), err_msg=name)
    # ordering: j1 is the lighter jet, and the importer did swap where the file's jet 1 was heavier
    assert np.all(got["mj1"] <= got["mj2"])
    assert (frame["mj1"] > frame["mj2"]).sum() > 100
    np.testing.assert_array_equal(got["j1_mass"], got["mj1"])
    np.testing.assert_array_equal(got["j1_tau21"], got["tau21_j1"])
    # τ21 of a jet with τ1 = 0 is 0, never inf / NaN
    assert np.all(np.isfinite(got["tau21_j1"])) and np.all(np.isfinite(got["tau21_j2"]))
    # truth from label; synthesised ids; dataset code; weights; not-in-file columns NaN
    np.testing.assert_array_equal(got["truth_label"], frame["label"].to_numpy().astype(int))
    np.testing.assert_array_equal(got["event"], np.arange(500))
    assert np.all(got["run"] == 0) and np.all(got["luminosityBlock"] == 0)
    assert np.all(got["weight"] == 1)
    assert store.dataset_names(str(tmp_path / "s.zarr"), "dijet") == ["data"]
    assert np.all(got["dataset"] == 0)
    for name in ("j1_tau43", "j2_tau43", "j1_msoftdrop", "j2_nconst", "j1_lsf3", "j2_btag"):
        assert np.all(np.isnan(got[name])), name
        assert name in summary["nan_columns"]
    # provenance: file, key and sha256
    prov = zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs["provenance"]
    (rec,) = prov["imports"]
    assert rec["format"] == "lhco" and rec["dataset"] == "data" and rec["table"] == "dijet"
    assert rec["files"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert rec["files"][0]["rows"] == 500 and rec["files"][0]["format"] == "table"


def test_lhco_fixed_format_extra_bkg_appends_as_second_dataset(tmp_path):
    data, extra = lhco_frame(300, seed=1), lhco_frame(120, seed=2, label=False)
    f_data = tmp_path / "events_anomalydetection_v2.features.h5"
    f_extra = tmp_path / "events_anomalydetection_qcd_extra_inneronly_features.h5"
    data.to_hdf(f_data, key="df", mode="w")  # pandas default: fixed format
    extra.to_hdf(f_extra, key="df", mode="w")
    out = str(tmp_path / "s.zarr")
    s1 = import_lhco(f_data, out, chunk_rows=128)
    s2 = import_lhco([f_extra], out, dataset="extra_bkg", chunk_rows=70)

    assert s1["files"][0]["format"] == "fixed" and s2["n_rows"] == 420
    assert store.dataset_names(out, "dijet") == ["data", "extra_bkg"]
    got = store.read_columns(out, "dijet", ["dataset", "truth_label", "mjj", "event"])
    np.testing.assert_array_equal(got["dataset"], np.r_[np.zeros(300), np.ones(120)])
    np.testing.assert_array_equal(got["truth_label"][:300], data["label"].to_numpy().astype(int))
    assert np.all(got["truth_label"][300:] == -1)  # extra file without 'label'
    np.testing.assert_allclose(got["mjj"], np.r_[expected_dijet(data)["mjj"], expected_dijet(extra)["mjj"]],
                               rtol=2e-6)
    np.testing.assert_array_equal(got["event"][300:], np.arange(120))
    assert len(zarr.open_group(out, mode="r").attrs["provenance"]["imports"]) == 2


def test_lhco_appends_to_a_table_with_other_dtypes(tmp_path):
    """A dijet/ table written before with other dtypes (ints where lhcad has no value) is respected."""
    out = str(tmp_path / "s.zarr")
    root = store.open_store(out)
    first = {c: np.zeros(3, dtype=np.float64) for c in store.DIJET_COLUMNS}
    first.update({"j1_nconst": np.full(3, 40, dtype=np.int16), "event": np.arange(3, dtype=np.int64)})
    store.append_columns(root, "dijet", first)
    src = tmp_path / "f.h5"
    frame = lhco_frame(20)
    frame.to_hdf(src, key="df", mode="w", format="table")
    import_lhco([src], out)
    got = store.read_columns(out, "dijet")
    assert got["j1_nconst"].dtype == np.int16 and list(got["j1_nconst"][3:]) == [-1] * 20  # NaN → -1
    assert got["mjj"].dtype == np.float64
    np.testing.assert_allclose(got["mjj"][3:], expected_dijet(frame)["mjj"], rtol=2e-6)


def test_lhco_label_ignored_when_not_truth(tmp_path):
    src = tmp_path / "f.h5"
    lhco_frame(40).to_hdf(src, key="df", mode="w", format="table")
    import_lhco([src], str(tmp_path / "s.zarr"), label_as_truth=False)
    assert np.all(store.read_columns(str(tmp_path / "s.zarr"), "dijet", ["truth_label"])["truth_label"] == -1)


def test_lhco_preselection_keeps_exactly_the_events_passing_the_processor_cuts(tmp_path, capsys):
    from lhcad.cli import main

    frame = lhco_frame(600, seed=7)
    rng = np.random.default_rng(8)
    for i in (1, 2):  # soft and forward jets so that every cut removes events
        scale = rng.uniform(0.15, 1.0, len(frame))
        for c in ("px", "py"):
            frame[f"{c}j{i}"] *= scale
        frame[f"pzj{i}"] *= rng.uniform(0.2, 3.0, len(frame))
    src = tmp_path / "events_anomalydetection_v2.features.h5"
    frame.to_hdf(src, key="df", mode="w", format="table")
    # independent recomputation of the processor's cuts on the two jets
    exp = expected_dijet(frame)
    two = (exp["j1_pt"] > 300) & (exp["j2_pt"] > 300) & (np.abs(exp["j1_eta"]) < 2.5) & (np.abs(exp["j2_eta"]) < 2.5)
    deta = two & (exp["delta_eta"] < 1.3)
    keep = deta & (exp["mjj"] > 1200)
    assert 0 < keep.sum() < deta.sum() < two.sum() < len(frame)  # each cut bites

    out = str(tmp_path / "s.zarr")
    summary = import_lhco([src], out, cuts={}, chunk_rows=250)  # {}: the processor's default cuts
    got = store.read_columns(out, "dijet")
    np.testing.assert_array_equal(got["event"], np.flatnonzero(keep))  # event = row index in the file
    np.testing.assert_allclose(got["mjj"], exp["mjj"][keep], rtol=2e-6)
    np.testing.assert_allclose(got["tau21_j2"], exp["tau21_j2"][keep], rtol=2e-6, atol=1e-6)
    flow = {"all": 600, "two_jets": int(two.sum()), "delta_eta": int(deta.sum()), "mjj": int(keep.sum())}
    assert summary["cutflow"] == flow and summary["rows"] == summary["n_rows"] == keep.sum()
    assert summary["files"][0]["rows"] == 600 and summary["files"][0]["stored"] == keep.sum()
    assert zarr.open_group(out, mode="r")["dijet"].attrs["cutflow"] == {"data": flow}
    rec = zarr.open_group(out, mode="r").attrs["provenance"]["imports"][0]
    assert rec["cuts"]["mjj_min"] == 1200 and rec["cutflow"] == flow

    # CLI: thresholds override the defaults; a threshold without --preselect is a usage error
    with pytest.raises(SystemExit) as exc:
        main(["-q", "import", "lhco", str(src), "--out", str(tmp_path / "c.zarr"), "--preselect",
              "--mjj-min", "2500", "--delta-eta-max", "2.0"])
    assert exc.value.code == 0
    strict = two & (exp["delta_eta"] < 2.0) & (exp["mjj"] > 2500)
    assert f"600 rows ({int(strict.sum())} pass the cuts)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["-q", "import", "lhco", str(src), "--out", str(tmp_path / "d.zarr"), "--mjj-min", "2500"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mjj-min needs --preselect" in err[0]
    with pytest.raises(ImporterError, match=r"dijet cuts .*pt_min"):
        import_lhco([src], str(tmp_path / "e.zarr"), cuts={"pt_min": -5})


def test_lhco_errors_name_file_and_columns(tmp_path):
    out = str(tmp_path / "s.zarr")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    with pytest.raises(ImporterError, match=r"notes\.h5: not an HDF5 file"):
        import_lhco([text], out)

    short = tmp_path / "short.h5"
    lhco_frame(10).drop(columns=["tau3j2", "mj1"]).to_hdf(short, key="df", mode="w", format="table")
    with pytest.raises(ImporterError, match=r"short\.h5: table '/df' lacks the LHCO columns mj1, tau3j2"):
        import_lhco([short], out)

    two = tmp_path / "two.h5"
    lhco_frame(10).to_hdf(two, key="a", mode="w", format="table")
    lhco_frame(10).to_hdf(two, key="b", mode="a", format="table")
    with pytest.raises(ImporterError, match=r"two\.h5: several pandas tables .*/a, /b"):
        import_lhco([two], out)
    assert import_lhco([two], out, key="b")["rows"] == 10
    with pytest.raises(ImporterError, match=r"two\.h5: no key 'c'"):
        import_lhco([two], out, key="c")
    # the same file twice into the same dataset would duplicate rows
    with pytest.raises(ImporterError, match=r"two\.h5: already imported into dijet/ dataset 'data'"):
        import_lhco([two], out, key="b")


def test_lhco_failure_midway_leaves_store_unchanged(tmp_path):
    out = str(tmp_path / "s.zarr")
    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    lhco_frame(50, seed=3).to_hdf(good, key="df", mode="w", format="table")
    frame = lhco_frame(200, seed=4)
    frame.loc[150, "label"] = np.nan  # a broken label in the second chunk
    frame.to_hdf(bad, key="df", mode="w", format="table")
    import_lhco([good], out)
    with pytest.raises(ImporterError, match=r"bad\.h5: key '/df' column 'label' row 150"):
        import_lhco([bad], out, dataset="test", chunk_rows=100)
    root = zarr.open_group(out, mode="r")
    assert root["dijet"].attrs["n_rows"] == 50
    assert root["dijet"].attrs["datasets"] == ["data"]
    assert all(root["dijet"][c].shape[0] == 50 for c in store.DIJET_COLUMNS)
    assert len(root.attrs["provenance"]["imports"]) == 1


# ----------------------------------------------------------------------------------------- ADC2021


def adc_particles(n: int, seed: int = 0) -> np.ndarray:
    """(n, 19, 4) events in the ADC2021 layout: pT-ordered objects, zero-padded slots (class 0)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 19, 4), dtype=np.float32)
    out[:, 0] = np.c_[rng.exponential(30, n), np.zeros(n), rng.uniform(-np.pi, np.pi, n), np.ones(n)]
    for start, size, cls, max_n in ((1, 4, 2, 4), (5, 4, 3, 4), (9, 10, 4, 10)):
        counts = rng.integers(0, max_n + 1, n)
        for r in range(n):
            k = counts[r]
            pt = np.sort(rng.exponential(25, k) + 3)[::-1]
            out[r, start:start + k] = np.c_[pt, rng.normal(0, 1.5, k), rng.uniform(-np.pi, np.pi, k), np.full(k, cls)]
    return out


def test_adc2021_particles_import_keeps_slots_padding_and_labels(tmp_path):
    parts = {"sm": adc_particles(300, 1), "ato4l": adc_particles(80, 2), "blackbox": adc_particles(60, 3)}
    names = {"sm": "background_for_training.h5", "ato4l": "Ato4l_lepFilter_13TeV.h5",
             "blackbox": "BlackBox_background_mix.h5"}
    out = str(tmp_path / "adc.zarr")
    for ds, p in parts.items():
        with h5py.File(tmp_path / names[ds], "w") as f:
            f["Particles"] = p
            f["Particles_Classes"] = np.array([b"MET_class_1", b"Four_Ele_class_2", b"Four_Mu_class_3", b"Ten_Jet_class_4"])
        summary = import_adc2021([tmp_path / names[ds]], out, dataset=ds, chunk_rows=70)
        assert summary["rows"] == len(p)

    got = store.read_columns(out, "l1")
    assert set(got) == set(store.L1_COLUMNS)
    assert got["particles"].shape == (440, 19, 3) and got["particles"].dtype == np.float32
    allp = np.concatenate(list(parts.values()))
    np.testing.assert_array_equal(got["particles"], allp[:, :, :3])
    # padding stays zero exactly where the class column said "empty"
    empty = allp[:, :, 3] == 0
    assert empty.any() and np.all(got["particles"][empty] == 0)
    assert np.all(got["particles"][~empty][:, 0] > 0)
    # slot layout: electrons in slots 1-4, muons 5-8, jets 9-18, each pT-ordered
    for sl in store.L1_SLICES.values():
        pt = got["particles"][:, sl, 0]
        assert np.all(np.diff(pt, axis=1) <= 0)
    assert store.dataset_names(out, "l1") == ["sm", "ato4l", "blackbox"]
    np.testing.assert_array_equal(got["truth_label"], np.r_[np.zeros(300), np.ones(80), -np.ones(60)])
    np.testing.assert_array_equal(got["dataset"], np.r_[np.zeros(300), np.ones(80), 2 * np.ones(60)])
    np.testing.assert_array_equal(got["event"][:300], np.arange(300))
    imports = zarr.open_group(out, mode="r").attrs["provenance"]["imports"]
    assert [r["dataset"] for r in imports] == ["sm", "ato4l", "blackbox"]
    assert imports[0]["files"][0]["sha256"] == hashlib.sha256((tmp_path / names["sm"]).read_bytes()).hexdigest()


def test_adc2021_derived_57_layout_is_row_major_slot_quantity(tmp_path):
    objs = {k: adc_particles(n, seed)[:, :, :3] for k, n, seed in (("X_train", 90, 5), ("X_test", 30, 6), ("X_val", 20, 7))}

    def flatten_by_hand(o):  # the documented order: feature 3k + j = slot k, quantity j
        flat = np.empty((len(o), 57), dtype=np.float32)
        for k in range(19):
            for j in range(3):
                flat[:, 3 * k + j] = o[:, k, j]
        return flat

    bkg = tmp_path / "background_for_training.h5_dataset.h5"
    with h5py.File(bkg, "w") as f:
        for k, o in objs.items():
            f[k] = flatten_by_hand(o)
    sig_obj = adc_particles(25, 8)[:, :, :3]
    sig = tmp_path / "Ato4l_dataset.h5"
    with h5py.File(sig, "w") as f:
        f["Data"] = flatten_by_hand(sig_obj)
    out = str(tmp_path / "adc.zarr")
    s = import_adc2021([bkg], out, dataset="sm", chunk_rows=40)
    assert [p["key"] for p in s["files"][0]["keys"]] == ["X_train", "X_test", "X_val"]
    assert all(p["layout"] == "flat" for p in s["files"][0]["keys"])
    import_adc2021([sig], out, dataset="ato4l")
    got = store.read_columns(out, "l1")
    np.testing.assert_array_equal(got["particles"], np.concatenate([*objs.values(), sig_obj]))
    # MET is slot 0 = features 0..2, the leading jet slot 9 = features 27..29
    with h5py.File(bkg, "r") as f:
        xtr = f["X_train"][...]
    np.testing.assert_array_equal(got["particles"][:90, 0, :], xtr[:, 0:3])
    np.testing.assert_array_equal(got["particles"][:90, 9, :], xtr[:, 27:30])
    np.testing.assert_array_equal(got["event"][:140], np.arange(140))  # keys counted in order
    np.testing.assert_array_equal(got["truth_label"], np.r_[np.zeros(140), np.ones(25)])
    # one split only
    out2 = str(tmp_path / "adc2.zarr")
    assert import_adc2021([bkg], out2, dataset="sm_test", keys=["X_test"], truth_label=0)["rows"] == 30
    np.testing.assert_array_equal(store.read_columns(out2, "l1", ["particles"])["particles"], objs["X_test"])


def test_adc2021_errors_name_file_key_and_shape(tmp_path):
    out = str(tmp_path / "adc.zarr")
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["Particles"] = np.zeros((5, 19, 3), dtype=np.float32)
    with pytest.raises(ImporterError, match=r"wrong\.h5: dataset 'Particles' has shape \(5, 19, 3\); expected \(N, 19, 4\)"):
        import_adc2021([wrong], out, dataset="sm")

    nokey = tmp_path / "nokey.h5"
    with h5py.File(nokey, "w") as f:
        f["Jets"] = np.zeros((5, 4))
    with pytest.raises(ImporterError, match=r"nokey\.h5: no dataset 'Particles' .*has: Jets"):
        import_adc2021([nokey], out, dataset="sm")
    with pytest.raises(ImporterError, match=r"nokey\.h5: no dataset 'X_test' \(has: Jets\)"):
        import_adc2021([nokey], out, dataset="sm", keys=["X_test"])

    flat = tmp_path / "flat.h5"
    with h5py.File(flat, "w") as f:
        f["X_train"] = np.zeros((5, 56), dtype=np.float32)
    with pytest.raises(ImporterError, match=r"flat\.h5: dataset 'X_train' has shape \(5, 56\); expected \(N, 57\)"):
        import_adc2021([flat], out, dataset="sm")

    text = tmp_path / "bkg.h5"
    text.write_bytes(b"\x00\x01 not hdf5")
    with pytest.raises(ImporterError, match=r"bkg\.h5: not an HDF5 file"):
        import_adc2021([text], out, dataset="sm")
    assert not (tmp_path / "adc.zarr" / "l1").exists()


def test_adc2021_class_mismatch_rolls_back(tmp_path):
    out = str(tmp_path / "adc.zarr")
    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    with h5py.File(good, "w") as f:
        f["Particles"] = adc_particles(30, 9)
    p = adc_particles(100, 10)
    p[77, 2] = [40.0, 0.3, 0.1, 4.0]  # a jet in an electron slot
    with h5py.File(bad, "w") as f:
        f["Particles"] = p
    import_adc2021([good], out, dataset="sm")
    with pytest.raises(ImporterError, match=r"bad\.h5: dataset 'Particles': event 77 slot 2 \(electron2\) has class 4"):
        import_adc2021([bad], out, dataset="ato4l", chunk_rows=32)
    root = zarr.open_group(out, mode="r")
    assert root["l1"].attrs["n_rows"] == 30 and root["l1"]["particles"].shape == (30, 19, 3)
    assert root["l1"].attrs["datasets"] == ["sm"]


def test_import_refuses_to_misalign_existing_scores(tmp_path):
    out = str(tmp_path / "adc.zarr")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for path, seed in ((a, 11), (b, 12)):
        with h5py.File(path, "w") as f:
            f["Particles"] = adc_particles(10, seed)
    import_adc2021([a], out, dataset="sm")
    store.write_scores(store.open_store(out), "l1", "ae", np.zeros(10))
    with pytest.raises(ImporterError, match=r"l1/scores already exists"):
        import_adc2021([b], out, dataset="ato4l")


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_import_lhco_and_adc2021(tmp_path, capsys):
    from lhcad.cli import main

    src = tmp_path / "events_anomalydetection_v2.features.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lhco_frame(60).to_hdf(src, key="df", mode="w", format="table")
    out = tmp_path / "s.zarr"
    with pytest.raises(SystemExit) as exc:
        main(["-q", "import", "lhco", str(src), "--out", str(out), "--label-as", "none",
              "--json", str(tmp_path / "summary.json")])
    assert exc.value.code == 0
    assert "dijet/ dataset 'data': 60 rows from 1 file(s)" in capsys.readouterr().out
    assert np.all(store.read_columns(str(out), "dijet", ["truth_label"])["truth_label"] == -1)
    assert '"sha256"' in (tmp_path / "summary.json").read_text()

    adc = tmp_path / "hToTauTau_13TeV_PU20.h5"
    with h5py.File(adc, "w") as f:
        f["Particles"] = adc_particles(20, 13)
    with pytest.raises(SystemExit) as exc:
        main(["-q", "import", "adc2021", str(adc), "--out", str(out), "--dataset", "h0_tautau"])
    assert exc.value.code == 0
    assert store.n_rows(str(out), "l1") == 20

    with pytest.raises(SystemExit) as exc:
        main(["-q", "import", "adc2021", str(src), "--out", str(out), "--dataset", "sm"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "events_anomalydetection_v2.features.h5: no dataset 'Particles'" in err[0]


# ----------------------------------------------------------------------------------------- streaming


def _peak_bytes(fn) -> int:
    """Peak Python-tracked allocation (numpy arrays included) while ``fn`` runs."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_imports_read_in_chunks_so_memory_does_not_grow_with_the_file(tmp_path):
    n = 30_000
    lhco = tmp_path / "events_anomalydetection_v2.features.h5"
    lhco_frame(n, seed=21).to_hdf(lhco, key="df", mode="w", format="table")
    adc = tmp_path / "background_for_training.h5"
    with h5py.File(adc, "w") as f:
        f["Particles"] = np.tile(adc_particles(500, 22), (n // 500, 1, 1))
    size = {"lhco": n * 15 * 8, "adc": n * 19 * 4 * 4}  # bytes of the numbers in each file

    peaks = {}
    for rows in (3_000, n):  # chunked, then the whole file in one read
        peaks["lhco", rows] = _peak_bytes(lambda: import_lhco([lhco], str(tmp_path / f"l{rows}.zarr"), chunk_rows=rows))
        peaks["adc", rows] = _peak_bytes(lambda: import_adc2021([adc], str(tmp_path / f"a{rows}.zarr"), dataset="sm",
                                                                  chunk_rows=rows))
    # one whole-file read holds the file's numbers (several times); chunked reads stay at a fixed
    # few MB (the 1 MiB checksum block, module caches) plus a chunk, far below that
    for kind in ("lhco", "adc"):
        assert size[kind] < peaks[kind, n] and peaks[kind, 3_000] < 0.5 * peaks[kind, n], (kind, peaks)
    assert store.n_rows(str(tmp_path / "l3000.zarr"), "dijet") == store.n_rows(str(tmp_path / "a3000.zarr"), "l1") == n

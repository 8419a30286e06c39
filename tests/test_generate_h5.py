"""Generator side of issue 12: LHCO R&D and ADC2021 h5 files written from generated events, imported back."""

from __future__ import annotations

import json

import awkward as ak
import h5py
import numpy as np
import pandas as pd
import uproot

from lhcad import store as _store
from cli_helpers import run_cli
from lhcad.generate.h5 import LHCO_COLUMNS



def test_lhco_h5_matches_nanoaod_and_imports(tmp_path):
    h5 = tmp_path / "events_anomalydetection.h5"
    assert run_cli(["-q", "generate", "dijet", "--events", "8000", "--signal-events", "800", "--test-events", "1000",
                    "--seed", "5", "--out", str(tmp_path / "nano"), "--lhco-h5", str(h5)]) == 0
    df = pd.read_hdf(h5)
    assert list(df.columns) == [*LHCO_COLUMNS, "label"]
    assert len(df) == 8800 and df["label"].sum() == 800
    assert pd.read_hdf(tmp_path / "events_anomalydetection_test.h5").shape == (1000, 15)
    # the h5 rows are the NanoAOD events: leading-jet momenta and masses agree
    fileset = json.loads((tmp_path / "nano" / "fileset.json").read_text())
    (path,) = fileset["data"]["files"]
    ev = uproot.open(path)["Events"].arrays(["FatJet_pt", "FatJet_phi", "FatJet_mass", "FatJet_tau2", "truth_label"])
    np.testing.assert_allclose(df["pxj1"], ak.to_numpy(ev.FatJet_pt[:, 0] * np.cos(ev.FatJet_phi[:, 0])), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(df["mj2"], ak.to_numpy(ev.FatJet_mass[:, 1]), rtol=1e-6)
    np.testing.assert_allclose(df["tau2j2"], ak.to_numpy(ev.FatJet_tau2[:, 1]), rtol=1e-6)
    assert np.array_equal(df["label"].to_numpy(), ak.to_numpy(ev.truth_label).astype(float))

    # and the issue-12 importer reads it: m_jj from the four-vectors, mj1 = lighter jet
    from lhcad.importers import import_lhco

    store_path = str(tmp_path / "store.zarr")
    import_lhco([h5], store_path, dataset="data")
    cols = _store.read_columns(store_path, "dijet", ["mjj", "mj1", "mj2", "truth_label"])
    p = {k: df[k].to_numpy() for k in LHCO_COLUMNS}
    e = [np.sqrt(p[f"px{j}"] ** 2 + p[f"py{j}"] ** 2 + p[f"pz{j}"] ** 2 + p[f"m{j}"] ** 2) for j in ("j1", "j2")]
    mjj = np.sqrt((e[0] + e[1]) ** 2 - sum((p[f"{c}j1"] + p[f"{c}j2"]) ** 2 for c in ("px", "py", "pz")))
    np.testing.assert_allclose(cols["mjj"], mjj, rtol=1e-4)
    np.testing.assert_allclose(cols["mj1"], np.minimum(p["mj1"], p["mj2"]), rtol=1e-5)
    assert np.array_equal(cols["truth_label"], df["label"].to_numpy().astype(cols["truth_label"].dtype))
    # the W' signal sits at 3.5 TeV in the imported m_jj too
    assert abs(np.median(cols["mjj"][cols["truth_label"] == 1]) / 3500 - 1) < 0.05


def test_adc2021_h5_imports(tmp_path):
    h5 = tmp_path / "background_for_training.h5"
    assert run_cli(["-q", "generate", "l1", "--events", "3000", "--signal-events", "300", "--blackbox-events", "0",
                    "--seed", "2", "--out", str(tmp_path / "nano"), "--h5", str(h5)]) == 0
    with h5py.File(h5) as f:
        particles = f["Particles"][...]
        assert [n.decode() for n in f["Particles_Names"][...]] == ["Pt", "Eta", "Phi", "Class"]
    assert particles.shape == (3000, 19, 4)
    assert not (tmp_path / "background_for_training_blackbox.h5").exists()
    from lhcad.importers import import_adc2021

    store_path = str(tmp_path / "store.zarr")
    import_adc2021([h5], store_path, dataset="sm")
    stored = _store.read_columns(store_path, "l1", ["particles"])["particles"]
    np.testing.assert_allclose(stored, particles[..., :3], rtol=1e-6)
    import_adc2021([tmp_path / "background_for_training_ato4l.h5"], store_path, dataset="ato4l", truth_label=1)
    assert _store.n_rows(store_path, "l1") == 3300

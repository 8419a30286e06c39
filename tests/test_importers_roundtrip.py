"""LHCO round trip (issue 12): one generated sample, stored twice, gives the same store and the same CATHODE.

generator → NanoAOD → ``lhcad process dijet`` (coffea processor) and generator → LHCO-format h5 →
``lhcad import lhco --preselect`` must hold the same events in the same rows with the same feature
bits, so that the real CATHODE training jobs (same seed) give the same max SIC on both. The large
version with a seed-to-seed noise estimate is ``benchmarks/lhco_roundtrip.py``.
"""

from __future__ import annotations

import json

import numpy as np
import zarr

from cli_helpers import run_cli
from lhcad.cluster import open_cluster
from lhcad.config import ClusterConfig, TrainConfig
from lhcad.importers.compare import compare_dijet_stores
from lhcad.models import jobs

SR = (3300.0, 3700.0)



def cathode_summary(store: str, artefacts) -> dict:
    cfg = TrainConfig(methods=["cathode"], sr=SR, folds=2, ensemble=1, flow_epochs=3, flow_max_events=4000,
                      flow_hidden=[32, 32], hgb_max_iter=60, seed=3, device="cpu", retries=0)
    spec = jobs.make_spec(store, cfg, artefacts)
    with open_cluster(ClusterConfig(type="iterative")) as cl:
        jobs.train(cl, spec, ["cathode"])
        return jobs.score(cl, spec, ["cathode"])[jobs.score_key("cathode", SR)]


def test_processor_and_lhco_import_give_the_same_store_and_cathode_sic(tmp_path):
    gen, h5 = tmp_path / "gen", tmp_path / "events_anomalydetection.h5"
    assert run_cli(["-q", "generate", "dijet", "--events", "12000", "--s-over-b", "0.4", "--test-events", "3000",
                    "--seed", "11", "--out", str(gen), "--lhco-h5", str(h5)]) == 0
    processed, imported = str(tmp_path / "processed.zarr"), str(tmp_path / "imported.zarr")
    assert run_cli(["-q", "process", "dijet", "--fileset", str(gen / "fileset.json"), "--out", processed,
                    "--executor", "iterative"]) == 0
    assert list(json.loads((gen / "fileset.json").read_text())) == ["data", "test"]
    for name, path in (("data", h5), ("test", tmp_path / "events_anomalydetection_test.h5")):
        assert run_cli(["-q", "import", "lhco", str(path), "--out", imported, "--dataset", name, "--preselect"]) == 0

    # the h5 holds every generated event; the importer applies the processor's cuts
    flows = [zarr.open_group(s, mode="r")["dijet"].attrs["cutflow"] for s in (processed, imported)]
    for name in ("data", "test"):
        proc, imp = flows[0][name], flows[1][name]
        assert proc["all"] == imp["all"] and proc["mjj"] == imp["mjj"]
        # the processor may pair a leading jet with a third one when the second fails pT/η;
        # the LHCO file has only two jets (such events then fail Δη or m_jj here)
        assert proc["two_jets"] >= imp["two_jets"]
    assert flows[0]["data"]["delta_eta"] < flows[0]["data"]["two_jets"]  # the cuts do remove events

    # same events, same rows, same bits (the generator numbers events from 1, h5 rows from 0)
    report = compare_dijet_stores(processed, imported, event_offset=1, ulps=0)
    assert report["matched"] == report["rows"][0] == report["rows"][1] > 5000
    assert report["aligned"] and report["features_equal"] and report["equal"], {k: v for k, v in report["columns"].items() if v["bad"]}
    assert set(report["columns"]) >= {"mjj", "mj1", "delta_m", "tau21_j1", "tau21_j2", "truth_label", "dataset"}
    assert "j1_msoftdrop" in report["not_in_other"]

    # CATHODE with the real jobs: identical inputs + seed → identical max SIC, and it finds the W'
    sic = [cathode_summary(s, tmp_path / f"art_{i}") for i, s in enumerate((processed, imported))]
    assert sic[0]["max_sic"] == sic[1]["max_sic"]
    assert sic[0]["auc"] == sic[1]["auc"]
    assert sic[0]["max_sic"] > 3.0 and sic[0]["auc"] > 0.75
    scores = [zarr.open_group(s, mode="r")["dijet/scores"][jobs.score_key("cathode", SR)][...]
              for s in (processed, imported)]
    np.testing.assert_array_equal(scores[0], scores[1])

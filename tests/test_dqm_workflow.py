"""DQM end to end on a numpy toy store: `lhcad dqm train|score|certify` → golden JSON, lumi, plots.

The toy (lhcad.dqm.toy) writes per-LS histograms in the LumiProcessor's layout; training runs as a
Dask task on a real local cluster (one worker)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from coffea.lumi_tools import LumiData, LumiMask

from cli_helpers import run_cli
from lhcad.cli import main
from lhcad.dqm import toy
from lhcad.dqm.data import read_me
from lhcad.store import open_store

REF = [300001, 300002, 300003, 300004, 300005, 300006]
CLEAN, ONE_BAD, MOSTLY_BAD, LOW = 310001, 310002, 310003, 310004
N_LS = 100


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    d = tmp_path_factory.mktemp("dqm")
    store = str(d / "store.zarr")
    root = open_store(store, mode="w")
    truth = toy.make_runs(
        root, REF + [CLEAN, ONE_BAD, MOSTLY_BAD, LOW],
        bad={ONE_BAD: {77: "hot_tower"}, MOSTLY_BAD: {ls: "met_tail" for ls in range(10, 80)}},
        low_stats_ls={LOW: [30]}, ls_per_run=N_LS, events_per_ls=400, severity=2.0, seed=11,
    )
    h = read_me(root, "Jet_phi")
    rec = 0.05 + 0.1 * np.exp(-h.lumi / 200.0)
    toy.write_brilcalc_csv(d / "lumi.csv", h.run, h.lumi, rec, avgpu=truth["avgpu"])
    models, out = d / "models", d / "cert"
    main_ok(["dqm", "train", "--store", store, "--out", str(models), "--reference-runs", ",".join(map(str, REF)),
             "--epochs", "8", "--holdout-fraction", "0.5", "--executor", "dask-local", "--workers", "1"])
    main_ok(["dqm", "score", "--store", store, "--models", str(models), "--executor", "iterative"])
    main_ok(["dqm", "certify", "--store", store, "--models", str(models), "--out", str(out),
             "--lumi-csv", str(d / "lumi.csv")])
    report = json.loads((out / "dqm_report.json").read_text())
    return {"dir": d, "store": store, "out": out, "report": report, "truth": truth, "models": models}


def main_ok(args):
    rc = run_cli(args)
    assert rc == 0, f"lhcad {' '.join(args)} exited {rc}"


def test_clean_run_is_certified_whole(certified):
    golden = json.loads((certified["out"] / "certification.json").read_text())
    assert golden[str(CLEAN)] == [[1, N_LS]]
    assert certified["report"]["runs"][str(CLEAN)]["combined"]["verdict"] == "GOOD"
    assert certified["report"]["runs"][str(CLEAN)]["combined"]["flagged"] == []


def test_run_with_one_bad_ls_loses_exactly_that_ls(certified):
    golden = json.loads((certified["out"] / "certification.json").read_text())
    assert golden[str(ONE_BAD)] == [[1, 76], [78, N_LS]]
    run = certified["report"]["runs"][str(ONE_BAD)]
    assert run["combined"]["verdict"] == "RECOVERED"
    assert run["combined"]["flagged"] == [77]
    assert run["per_me"]["Jet_phi"]["flagged"] == [77]  # the hot tower is seen in the φ map
    mask = LumiMask(str(certified["out"] / "certification.json"))
    assert mask(np.array([ONE_BAD] * 3, np.uint32), np.array([76, 77, 78], np.uint32)).tolist() == [True, False, True]


def test_mostly_bad_run_is_bad_and_low_stats_ls_reported(certified):
    runs = certified["report"]["runs"]
    assert runs[str(MOSTLY_BAD)]["combined"]["verdict"] == "BAD"
    golden = json.loads((certified["out"] / "certification.json").read_text())
    assert str(MOSTLY_BAD) not in golden
    low = runs[str(LOW)]["combined"]
    assert low["low_stats"] == [30] and 30 not in low["certified"] and low["verdict"] == "GOOD"
    assert golden[str(LOW)] == [[1, 29], [31, N_LS]]
    assert certified["report"]["n_ls_low_stats"] == 1


def test_recovered_lumi_matches_lumidata_of_clean_ls(certified):
    lu = certified["report"]["lumi"]
    ld = LumiData(str(certified["dir"] / "lumi.csv"))
    runs = certified["report"]["runs"]
    recovered = [int(r) for r, v in runs.items() if v["combined"]["verdict"] == "RECOVERED"]
    assert ONE_BAD in recovered
    pairs = np.array([[r, ls] for r in recovered for ls in runs[str(r)]["combined"]["certified"]])
    assert lu["recovered_pb"] == pytest.approx(ld.get_lumi(pairs), rel=1e-9)
    one_bad = np.array([[ONE_BAD, ls] for ls in range(1, N_LS + 1) if ls != 77])
    assert lu["recovered_pb"] >= ld.get_lumi(one_bad) * (1 - 1e-9)
    assert lu["ls_missing_from_csv"] == 0
    assert lu["certified_pb"] < lu["delivered_to_dqm_pb"]


def test_scores_in_store_and_both_models_compared(certified):
    root = open_store(certified["store"], mode="r")
    for me in ("Jet_phi", "MET_significance", "PV_npvs"):
        for kind in ("dense", "lstm"):
            arr = root["lumi"][me]["scores"][kind]
            assert np.isfinite(arr[...]).all() and arr.attrs["threshold"] > 0
    flags = certified["report"]["flags_per_model"]
    assert set(flags) == {"dense", "lstm"}
    # the LSTM (sequence) AE also finds the hot tower and the MET tail
    assert flags["lstm"]["Jet_phi"] >= 1 and flags["lstm"]["MET_significance"] >= 50


def test_plots_written(certified):
    plots = certified["report"]["artefacts"]["plots"]
    assert any("score_vs_ls_" in p for p in plots) and any("worst_ls_" in p for p in plots)
    for p in plots:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_user_errors_exit_2(certified, tmp_path, capsys):
    cases = [
        (["dqm", "train", "--store", str(tmp_path / "none.zarr"), "--out", str(tmp_path), "--reference-runs", "1"], "none.zarr"),
        (["dqm", "train", "--store", certified["store"], "--out", str(tmp_path), "--reference-runs", "1,x"], "--reference-runs"),
        (["dqm", "train", "--store", certified["store"], "--out", str(tmp_path), "--me", "Nope",
          "--reference-runs", "300001", "--executor", "iterative"], "Nope"),
        (["dqm", "train", "--store", certified["store"], "--out", str(tmp_path), "--executor", "iterative"], "reference"),
        (["dqm", "certify", "--store", certified["store"], "--models", str(tmp_path / "m"), "--out", str(tmp_path)], "calibration.json"),
    ]
    for args, needle in cases:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2, args
        assert needle in capsys.readouterr().err

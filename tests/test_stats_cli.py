"""``lhcad stats scan|fit|limits`` on a Zarr store, error handling, and the pipeline stage."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from lhcad import cli, store as st
from lhcad.config import ClusterConfig, PipelineConfig, StatsConfig
from lhcad.stats.calibration import controlled_scores, sample_mjj

TRUTH4 = [1.0, 12.0, 4.0, 0.6]
STATS = {"n_windows": 3, "first_window": 3200.0, "window_step": 200.0, "efficiencies": [0.05], "toys": 50,
         "limit_masses": [3000.0, 4000.0], "functions": [3, 4]}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A dijet/ table: 'data' (QCD-like + 400 W'(3.5 TeV) events) and 'extra_bkg'; CATHODE-like scores
    written for two of the three windows (the others fall back to the nearest window's key)."""
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("stats") / "store.zarr")
    root = st.open_store(path, mode="w")
    n_b, n_s = 120_000, 400
    mjj = np.concatenate([sample_mjj(TRUTH4, n_b, (1800.0, 7000.0), rng), rng.normal(3500, 120, n_s)])
    truth = np.concatenate([np.zeros(n_b, np.int32), np.ones(n_s, np.int32)])
    order = rng.permutation(mjj.size)
    data_code = st.dataset_code(root, "dijet", "data")
    st.append_columns(root, "dijet", {"mjj": mjj[order].astype(np.float32), "weight": np.ones(mjj.size, np.float32),
                                      "dataset": np.full(mjj.size, data_code, np.int32), "truth_label": truth[order]})
    extra = sample_mjj(TRUTH4, 5000, (1800.0, 7000.0), rng)
    extra_code = st.dataset_code(root, "dijet", "extra_bkg")
    st.append_columns(root, "dijet", {"mjj": extra.astype(np.float32), "weight": np.ones(extra.size, np.float32),
                                      "dataset": np.full(extra.size, extra_code, np.int32),
                                      "truth_label": np.zeros(extra.size, np.int32)})
    sb, ss = controlled_scores(n_b, n_s, 0.05, 0.6, rng)
    scores = np.concatenate([np.concatenate([sb, ss])[order], np.full(extra.size, np.nan)])
    st.write_scores(root, "dijet", "cathode__3400_3800", scores)
    st.write_scores(root, "dijet", "cathode__3600_4000", scores)
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "stats.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"type": "iterative"}, "stats": STATS}))
    return path


def _run(argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    return exc.value.code


def test_scan_command_writes_results_and_plots(store, config_file, tmp_path):
    assert _run(["-q", "stats", "scan", store, "--config", str(config_file), "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "scan.json").read_text())
    keys = {tuple(w["sr"]): w["score_key"] for w in res["windows"]}
    assert keys[(3400.0, 3800.0)] == "cathode__3400_3800"
    assert keys[(3200.0, 3600.0)] == "cathode__3400_3800"  # nearest trained window, recorded
    best = res["best"]["0.05"]
    assert best["sr"][0] <= 3500 <= best["sr"][1] and best["significance"] > 3
    assert res["global"]["0.05"]["npe"] == 50
    for p in res["plots"]:
        assert Path(p).stat().st_size > 10_000


def test_fit_command_with_sideband(store, tmp_path, capsys):
    code = _run(["stats", "fit", store, "--sr", "3300", "3700", "--out", str(tmp_path)])
    assert code == 0
    res = json.loads((tmp_path / "fit.json").read_text())
    assert res["chosen_npar"] in (3, 4, 5) and res["sr"] == [3300.0, 3700.0]
    # the injected W' sits in the excluded SR: positive pulls there
    edges = np.asarray(res["spectrum"]["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    in_sr = (centres > 3300) & (centres < 3700)
    assert np.sum(np.asarray(res["pulls"])[in_sr]) > 0
    assert (tmp_path / "fit.png").exists()


def test_limits_command_writes_brazil_plot(store, config_file, tmp_path):
    assert _run(["-q", "stats", "limits", store, "--config", str(config_file), "--masses", "3000,4500",
                 "--luminosity", "100", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "limits.json").read_text())
    assert res["unit"] == "fb" and [r["mass"] for r in res["limits"]] == [3000.0, 4500.0]
    assert (tmp_path / "limits_brazil.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (["stats", "scan", "{missing}"], "no lhcad Zarr store"),
        (["stats", "scan", "{store}", "--score-key", "nope__1_2"], "nope__1_2"),
        (["stats", "scan", "{store}", "--method", "iad"], "no scores for method 'iad'"),
        (["stats", "scan", "{store}", "--dataset", "test"], "dataset 'test' not found"),
        (["stats", "scan", "{store}", "--efficiencies", "0.1,2"], "efficiencies"),
        (["stats", "limits", "{store}", "--masses", "3000,abc"], "--masses"),
        (["stats", "limits", "{store}", "--masses", "9000"], "9000"),
        (["stats", "fit", "{store}", "--npar", "7"], "--npar"),
    ],
)
def test_bad_inputs_exit_2_with_one_clear_line(store, tmp_path, capsys, argv, message):
    argv = [a.format(store=store, missing=str(tmp_path / "none.zarr")) for a in argv]
    assert _run([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pipeline_stage_returns_figures_plots_artefacts(store, tmp_path):
    from lhcad.pipeline import RunContext
    from lhcad.stats.stage import pipeline_stage

    cfg = PipelineConfig(store=store, workdir=str(tmp_path), cluster=ClusterConfig(type="iterative"),
                         stats=StatsConfig(**{**STATS, "limit_masses": [3500.0]}))
    out = pipeline_stage(cfg, RunContext(cfg, "<test>"))
    assert out["figures"]["best_window_eps0.05"] in {"3200-3600", "3400-3800"}
    assert out["figures"]["global_npe"] == 50 and "limit_exp_m3500" in out["figures"]
    assert 0 < out["figures"]["best_window_chi2_ndf_eps0.05"] < 3.0
    # every event is scored, so the fit spans the whole configured range (1.8-7 TeV, data-clamped)
    lo, hi = map(float, out["figures"]["best_window_fit_range_eps0.05"].split("-"))
    assert lo < 1850 and hi > 6000
    assert all(Path(p).is_absolute() and Path(p).exists() for p in out["plots"])
    assert Path(out["artefacts"]["scan"]).parent == (tmp_path / "stats").resolve()
    json.dumps(out)

"""DQM: golden JSON / luminosity with coffea.lumi_tools, χ² test, thresholds, the Poisson score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from coffea.lumi_tools import LumiData, LumiMask
from scipy import stats

from lhcad.dqm.calibrate import calibrate_threshold
from lhcad.dqm.certify import run_test, to_golden, write_golden
from lhcad.dqm.evaluate import read_truth
from lhcad.dqm.lumi import certified_lumi
from lhcad.dqm.score import poisson_chi2

LUMI_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lumi"
CSV = LUMI_DIR / "lumi_small.csv"
GOLDEN_2017 = LUMI_DIR / "Cert_294927-306462_13TeV_EOY2017ReReco_Collisions17_JSON.txt"


def test_golden_json_round_trip_with_lumimask(tmp_path):
    rng = np.random.default_rng(3)
    certified = {run: sorted(rng.choice(np.arange(1, 400), 250, replace=False).tolist()) for run in (297050, 315267)}
    path = write_golden(to_golden(certified), tmp_path / "cert.json")
    golden = json.loads(path.read_text())
    assert set(golden) == {"297050", "315267"}
    assert all(a <= b for ranges in golden.values() for a, b in ranges)
    runs = np.repeat([297050, 315267, 300000], 400).astype(np.uint32)
    lumis = np.tile(np.arange(1, 401), 3).astype(np.uint32)
    mask = LumiMask(str(path))(runs, lumis)
    expected = np.array([r in certified and int(ls) in set(certified[r]) for r, ls in zip(runs.tolist(), lumis.tolist())])
    np.testing.assert_array_equal(mask, expected)


def _pandas_lumi(first: int, last: int) -> float:
    """Independent computation: pandas on the CSV, golden JSON ranges checked by hand."""
    df = pd.read_csv(CSV, comment="#", header=None,
                     names=["runfill", "ls", "time", "beam", "E", "delivered", "recorded", "avgpu", "source"])
    df["run"] = df["runfill"].str.split(":").str[0].astype(int)
    df["lsn"] = df["ls"].str.split(":").str[0].astype(int)
    golden = json.loads(GOLDEN_2017.read_text())

    def ok(run, ls):
        return any(a <= ls <= b for a, b in golden.get(str(run), []))

    sel = df[(df.run >= first) & (df.run <= last)]
    return float(sel[[ok(r, l) for r, l in zip(sel.run, sel.lsn)]]["recorded"].sum())


@pytest.mark.parametrize("runs", [(297050, 297050), (297050, 297057), (297056, 297057)])
def test_real_csv_and_2017_golden_json_give_documented_lumi(runs):
    expected = _pandas_lumi(*runs)
    assert expected > 0
    assert certified_lumi(GOLDEN_2017, CSV, runs) == pytest.approx(expected, rel=1e-9)
    # all three runs together, as documented in the README: 124.01 /pb for 297050–297056
    if runs == (297050, 297057):
        assert LumiData(str(CSV)).get_lumi(np.array([[297050, 12]])) == pytest.approx(0.154234862)


def test_lumi_cli_json_output(capsys):
    from lhcad.cli import main

    try:
        main(["dqm", "lumi", "--json", str(GOLDEN_2017), "--csv", str(CSV), "--runs", "297050-297056"])
    except SystemExit as exc:  # typer's standalone mode may exit 0 on success
        assert exc.code in (0, None)
    res = json.loads(capsys.readouterr().out)
    assert res["recorded_pb"] == pytest.approx(_pandas_lumi(297050, 297056), rel=1e-9)
    with pytest.raises(SystemExit) as exc:
        main(["dqm", "lumi", "--json", str(GOLDEN_2017), "--csv", str(CSV), "--runs", "297050"])
    assert exc.value.code == 2 and "--runs" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["json", "csv"])
def test_lumi_cli_missing_input_exit_2(tmp_path, capsys, which):
    from lhcad.cli import main

    args = {"json": ["--json", str(tmp_path / "nope.json"), "--csv", str(CSV)],
            "csv": ["--json", str(GOLDEN_2017), "--csv", str(tmp_path / "missing.csv")]}[which]
    with pytest.raises(SystemExit) as exc:
        main(["dqm", "lumi", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert ("nope.json" if which == "json" else "missing.csv") in err


def _pu_hists(rng, pu, n_events=300, scale=1.0):
    """PV_npvs-like per-LS histograms: Poisson(0.7 · pu · scale) vertices, 40 bins over 0–80."""
    return np.array([np.histogram(rng.poisson(0.7 * p * scale, n_events), 40, (0, 80))[0] for p in pu])


def test_run_test_conditions_matched_null_and_sensitivity():
    rng = np.random.default_rng(0)
    ref_pu = rng.uniform(30, 60, 1500)
    ref = _pu_hists(rng, ref_pu)
    pvals = []
    for _ in range(60):
        pu = rng.uniform(35, 55, 60)
        chi2, ndf, p, n_tested = run_test(_pu_hists(rng, pu), ref, cond=pu, ref_cond=ref_pu)
        assert n_tested == 60 and ndf > 5
        pvals.append(p)
    pvals = np.array(pvals)
    # GOOD runs at pile-ups the reference covers pass (the +1 regularisation makes it conservative)
    assert (pvals < 1e-3).sum() == 0 and np.median(pvals) > 0.2
    # a 10 % shift in the vertex count over a whole run is found...
    pu = rng.uniform(35, 55, 60)
    assert run_test(_pu_hists(rng, pu, scale=1.1), ref, cond=pu, ref_cond=ref_pu)[2] < 1e-6
    # ...and without matching pile-up the GOOD run itself would look BAD (why matching is needed)
    pu_hi = rng.uniform(54, 58, 60)
    assert run_test(_pu_hists(rng, pu_hi), ref, cond=pu_hi, ref_cond=ref_pu)[2] > 1e-3
    assert run_test(_pu_hists(rng, pu_hi), ref)[2] < 1e-6
    # pile-up the reference does not cover: no test rather than a wrong one
    pu_out = np.full(20, 90.0)
    assert run_test(_pu_hists(rng, pu_out), ref, cond=pu_out, ref_cond=ref_pu)[3] == 0


def test_threshold_false_flag_rate_on_fresh_good_scores():
    rng = np.random.default_rng(1)
    hold = rng.chisquare(20, 50_000) / 20
    fresh = rng.chisquare(20, 200_000) / 20
    t = calibrate_threshold(hold, 1e-3)
    assert t.method == "empirical"
    assert 0.5e-3 < np.mean(fresh >= t.threshold) < 2e-3
    # few held-out LSs: tail fit, conservative but not absurd
    t_small = calibrate_threshold(hold[:400], 1e-3)
    assert t_small.method == "tail-fit"
    assert np.mean(fresh >= t_small.threshold) < 3e-3
    assert t_small.threshold < 3 * t.threshold
    with pytest.raises(ValueError, match="held-out"):
        calibrate_threshold(hold[:5], 1e-3)


@pytest.mark.parametrize("n", [15, 300, 20000])
def test_poisson_score_is_statistics_independent(n):
    rng = np.random.default_rng(n)
    shape = np.exp(-np.linspace(0, 3, 25))
    shape /= shape.sum()
    counts = rng.multinomial(n, shape, size=4000)
    s = poisson_chi2(counts / n, np.tile(shape, (4000, 1)), np.full(4000, n))
    # Pearson χ² per bin ≈ 1 once bins hold a few expected entries; at very low statistics the
    # "+1" in the denominator makes it smaller, never larger: low-stats LSs are not over-flagged
    if n >= 300:
        assert 0.75 < s.mean() < 1.05
    else:
        assert s.mean() < 1.0 and np.quantile(s, 0.999) < np.quantile(
            poisson_chi2(rng.multinomial(20000, shape, size=4000) / 20000, np.tile(shape, (4000, 1)),
                         np.full(4000, 20000)), 0.999) * 1.5


def test_truth_formats():
    t = read_truth({"runs": {"1": {"status": "GOOD", "faults": {}},
                             "2": {"faults": [{"ls": 5, "kind": "hot_tower"}, {"first": 7, "last": 8, "kind": "met_tail"}]},
                             "3": {"faults": {"4": "dead_sector"}}}})
    assert t.good_runs == {1} and t.bad_runs == {2, 3}
    assert t.faults == {(2, 5): "hot_tower", (2, 7): "met_tail", (2, 8): "met_tail", (3, 4): "dead_sector"}

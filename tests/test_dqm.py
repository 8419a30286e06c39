"""DQM: golden JSON / luminosity with coffea.lumi_tools, χ² test, thresholds, the Poisson score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from coffea.lumi_tools import LumiData, LumiMask
from scipy import stats

from lhcad.dqm.calibrate import calibrate_combined, calibrate_threshold, min_holdout
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


@pytest.mark.parametrize("test", ["chi2", "ks"])
def test_run_test_conditions_matched_null_and_sensitivity(test):
    rng = np.random.default_rng(0)
    ref_pu = rng.uniform(30, 60, 1500)
    ref = _pu_hists(rng, ref_pu)
    pvals = []
    for _ in range(60):
        pu = rng.uniform(35, 55, 60)
        chi2, ndf, p, n_tested = run_test(_pu_hists(rng, pu), ref, cond=pu, ref_cond=ref_pu, test=test)
        assert n_tested == 60 and ndf > 5
        pvals.append(p)
    pvals = np.array(pvals)
    # GOOD runs at pile-ups the reference covers pass (χ²: the +1 regularisation, KS: the binning
    # make them conservative)
    assert (pvals < 1e-3).sum() == 0 and np.median(pvals) > 0.2
    # a 10 % shift in the vertex count over a whole run is found...
    pu = rng.uniform(35, 55, 60)
    assert run_test(_pu_hists(rng, pu, scale=1.1), ref, cond=pu, ref_cond=ref_pu, test=test)[2] < 1e-6
    # ...and without matching pile-up the GOOD run itself would look BAD (why matching is needed)
    pu_hi = rng.uniform(54, 58, 60)
    assert run_test(_pu_hists(rng, pu_hi), ref, cond=pu_hi, ref_cond=ref_pu, test=test)[2] > 1e-3
    assert run_test(_pu_hists(rng, pu_hi), ref, test=test)[2] < 1e-6
    # pile-up the reference does not cover: no test rather than a wrong one
    pu_out = np.full(20, 90.0)
    assert run_test(_pu_hists(rng, pu_out), ref, cond=pu_out, ref_cond=ref_pu, test=test)[3] == 0


def test_run_test_ks_and_chi2_differ_where_documented():
    """A hot bin (a spike in one bin of many) is what χ² sees and KS barely does; KS is exact on
    a whole-distribution shift; an unknown test name is an error."""
    rng = np.random.default_rng(4)
    shape = np.exp(-np.linspace(0, 4, 50))
    shape /= shape.sum()
    ref = rng.multinomial(2000, shape, size=800)
    hot = rng.multinomial(2000, shape, size=50).astype(float)
    hot[:, 25] += 15  # +15 entries per LS in one tail bin (expected ~4)
    assert run_test(hot, ref, syst=0.0, test="chi2")[2] < 1e-6
    assert run_test(hot, ref, syst=0.0, test="ks")[2] > 1e-3
    shifted = rng.multinomial(2000, np.roll(shape, 1), size=50)
    assert run_test(shifted, ref, test="ks")[2] < 1e-6
    with pytest.raises(ValueError, match="chi2 or 'ks'|'chi2' or 'ks'"):
        run_test(hot, ref, test="anderson")


def test_threshold_false_flag_rate_on_fresh_good_scores():
    rng = np.random.default_rng(1)
    hold = rng.chisquare(20, 50_000) / 20
    fresh = rng.chisquare(20, 200_000) / 20
    t = calibrate_threshold(hold, 1e-3)
    assert t.method == "conformal-ucb" and t.confidence == 0.9 and t.rate_upper <= 1e-3
    assert 0.5e-3 < np.mean(fresh >= t.threshold) <= 1.2e-3
    # few held-out LSs: tail fit, conservative but not absurd
    t_small = calibrate_threshold(hold[:400], 1e-3)
    assert t_small.method == "tail-fit" and t_small.rate_upper is None
    assert np.mean(fresh >= t_small.threshold) < 3e-3
    assert t_small.threshold < 3 * t.threshold
    with pytest.raises(ValueError, match="held-out"):
        calibrate_threshold(hold[:5], 1e-3)


@pytest.mark.parametrize("confidence", [None, 0.9])
def test_conformal_threshold_coverage_over_calibration_sets(confidence):
    """The true false-flag rate of thresholds from many calibration sets of the minimal size:
    mean ≤ α for the (n+1) quantile; ≤ α in ≥ 90 % of the sets for the upper confidence bound."""
    alpha, df = 1e-3, 8
    n = min_holdout(alpha, confidence)
    assert n == (999 if confidence is None else 2302)
    rng = np.random.default_rng(5)
    rates = []
    for _ in range(400):
        t = calibrate_threshold(rng.chisquare(df, n), alpha, confidence=confidence)
        assert t.method.startswith("conformal")
        rates.append(stats.chi2.sf(t.threshold, df))  # exact rate on fresh GOOD LSs
    rates = np.array(rates)
    if confidence is None:
        assert rates.mean() <= 1.15e-3  # E[rate] = 1/(n+1) = 1e-3 (±5 % statistical)
        assert np.mean(rates > alpha) > 0.25  # ...but single thresholds are often above it
    else:
        assert np.mean(rates <= alpha) >= 0.86  # 0.9 expected, binomial σ 0.015
    # one LS fewer than needed: no finite conformal quantile → tail fit
    assert calibrate_threshold(rng.chisquare(df, n - 1), alpha, confidence=confidence).method == "tail-fit"


def test_combined_calibration_controls_the_any_me_rate():
    """Correlated MEs: one joint threshold on max(s/q) gives the target rate of LSs flagged by any ME;
    Bonferroni (α / n_ME per ME) is conservative here."""
    rng = np.random.default_rng(2)
    n_me, alpha = 4, 1e-3

    def sample(n):
        common = rng.chisquare(6, (n, 1))
        return (common + rng.chisquare(6, (n, n_me))) / 12 * np.array([1.0, 2.0, 0.5, 3.0])

    hold, fresh = sample(40_000), sample(400_000)
    t, q = calibrate_combined(hold, alpha, confidence=None)
    assert t.method == "conformal" and q.shape == (n_me,)
    any_rate = np.mean((fresh >= t.threshold * q).any(axis=1))
    assert 0.7e-3 < any_rate < 1.3e-3
    bonf = np.array([np.quantile(hold[:, m], 1 - alpha / n_me) for m in range(n_me)])
    assert np.mean((fresh >= bonf).any(axis=1)) < any_rate
    with_nan = hold.copy()
    with_nan[::7, 2] = np.nan  # an ME without a score for some LSs: the others decide
    assert calibrate_combined(with_nan, alpha)[0].n_holdout == len(hold)


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


@pytest.mark.parametrize("kind", ["dense", "lstm"])
def test_autoencoders_follow_the_input_not_the_mean_shape(kind):
    """Regression: with the loss at its raw ~1e-6 scale, Adam's eps froze both AEs at a constant
    output (the mean shape). GOOD LSs whose shape drifts with pile-up must be reconstructed far
    better than by the mean shape, and a distorted LS must still score high."""
    from lhcad.models.dqm_dense import DenseAE
    from lhcad.models.dqm_lstm import LSTMAE

    rng = np.random.default_rng(7)
    n_runs, n_ls, n_ev = 8, 60, 800
    pu = np.concatenate([np.linspace(a, a * 0.7, n_ls) for a in rng.uniform(15, 35, n_runs)])
    runs = np.repeat(np.arange(n_runs), n_ls)
    # most bins empty, as in the MET_pt ME, where the collapse showed (7 of 50 bins populated)
    counts = np.array([np.histogram(rng.poisson(p, n_ev), 40, (0, 200))[0] for p in pu])
    X, N = counts / counts.sum(1, keepdims=True), counts.sum(1).astype(float)
    model = (DenseAE(hidden=32, latent=4, epochs=25, seed=1, threads=1) if kind == "dense"
             else LSTMAE(window=8, hidden=32, latent=8, epochs=25, seed=1, threads=1)).fit(X, N, runs)
    recon = model.reconstruct(X, runs)
    assert np.abs(recon - recon.mean(axis=0)).max() > 0.01  # not a constant output
    ae = poisson_chi2(X, recon, N).mean()
    mean_shape = poisson_chi2(X, np.tile(X.mean(axis=0), (len(X), 1)), N).mean()
    assert ae < 0.25 * mean_shape
    bad = counts.copy().astype(float)
    bad[:, 20] += 40  # a hot bin (an empty bin of GOOD LSs)
    bad_scores = model.score_samples(bad / bad.sum(1, keepdims=True), bad.sum(1), runs)
    assert np.median(bad_scores) > np.quantile(model.score_samples(X, N, runs), 0.99)

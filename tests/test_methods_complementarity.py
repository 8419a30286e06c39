"""Complementarity of AD methods: correlation / overlap matrices and score combinations on known truth,
and the benchmark script's command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lhcad.models.complementarity import (StackedCombination, combine, correlation_matrices, normalise,
                                          plot_matrix, tail_surprise, top_selection)
from lhcad.models.metrics import sic_summary

ROOT = Path(__file__).resolve().parents[1]


def _two_signal_toy(rng, n_bkg=40_000, n_sig=400):
    """Method A sees signal type 1, method B signal type 2; both are noise elsewhere."""
    y = np.r_[np.zeros(n_bkg), np.ones(n_sig), 2 * np.ones(n_sig)].astype(int)
    a = rng.normal(size=len(y)) + 3.0 * (y == 1)
    b = rng.normal(size=len(y)) + 3.0 * (y == 2)
    return y, {"A": a, "B": b}


def test_correlation_matrices_known_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20_000)
    r = correlation_matrices({"x": x, "same": 2 * x + 1, "mono": np.exp(x), "indep": rng.normal(size=20_000)},
                             fraction=0.01)
    P, S, O = (np.array(r[k]) for k in ("pearson", "spearman", "top_overlap"))
    assert r["methods"] == ["x", "same", "mono", "indep"] and r["n"] == 20_000
    assert np.allclose(np.diag(P), 1) and np.allclose(P, P.T)
    assert P[0, 1] == pytest.approx(1.0) and S[0, 2] == pytest.approx(1.0)
    assert P[0, 2] < 0.9                      # Pearson sees the non-linearity, Spearman does not
    assert O[0, 1] == 1.0 and O[0, 2] == 1.0  # monotone maps select the same events
    # independent scores overlap at the random rate (binomial: 200 events, p = 0.01)
    assert O[0, 3] < 0.06
    assert top_selection(x, 0.01).sum() == 200


def test_combination_recovers_complementary_methods():
    rng = np.random.default_rng(1)
    y, scores = _two_signal_toy(rng)
    ref = {k: s for k, s in scores.items()}
    for sig in (1, 2):
        rows = (y == 0) | (y == sig)
        truth = y[rows] > 0
        single = {k: sic_summary(truth, s[rows])["max_sic"] for k, s in scores.items()}
        best = max(single.values())
        assert best > 5 and min(single.values()) < 2       # each method sees only "its" signal
        sub = {k: s[rows] for k, s in scores.items()}
        comb = {how: sic_summary(truth, combine(sub, how, reference=ref))["max_sic"]
                for how in ("rank_max", "fisher", "rank_mean")}
        # max of percentiles: the FPR of two independent selections adds up, so ≈ best / √2
        assert comb["rank_max"] > 0.6 * best, (sig, comb, best)
        # every combination beats the method blind to this signal by far
        assert min(comb["rank_max"], comb["fisher"]) > 2 * min(single.values()), (sig, comb, single)
    # no labels are used: the combination of background-only scores is itself uniform-ish
    bkg = {k: s[y == 0] for k, s in scores.items()}
    u = combine(bkg, "rank_max", reference=bkg)
    assert 0.6 < np.median(u) < 0.8                          # max of two uniforms: median 1/√2


def _five_methods(rng, n_bkg, n_sig, informative):
    """Scores of five methods: only ``informative`` sees the signal (the last ``n_sig`` rows)."""
    y = np.r_[np.zeros(n_bkg, bool), np.ones(n_sig, bool)]
    S = rng.normal(size=(len(y), 5))
    S[y, informative] += 3.5
    return y, S


def test_stacked_combination_follows_the_informative_method(tmp_path):
    """CWoLa-style stacking (SR data with 3 % signal vs sideband data, no labels) on five methods of
    which one carries the signal: within 10 % of that method's SIC on an independent labelled test
    sample, where the fixed rank-mean / Fisher combinations are diluted by the four blind methods."""
    for informative in (0, 3):
        rng = np.random.default_rng(informative)
        _, S_sr = _five_methods(rng, 10_000, 300, informative)       # unlabelled "signal region"
        _, S_sb = _five_methods(rng, 10_000, 0, informative)         # "sidebands": background only
        y, S_test = _five_methods(rng, 20_000, 1_000, informative)
        ref = np.concatenate([S_sr, S_sb])
        P = lambda S: np.column_stack([normalise(S[:, j], ref[:, j]) for j in range(5)])  # noqa: E731
        st = StackedCombination(random_state=1).fit(P(S_sr), P(S_sb))
        best = sic_summary(y, S_test[:, informative])["max_sic"]
        stack = sic_summary(y, st.score_samples(P(S_test)))["max_sic"]
        names = [f"m{j}" for j in range(5)]
        fixed = {how: sic_summary(y, combine(dict(zip(names, S_test.T)), how,
                                             reference=dict(zip(names, ref.T))))["max_sic"]
                 for how in ("rank_mean", "fisher")}
        assert best > 10 and stack > 0.9 * best, (informative, stack, best)
        assert max(fixed.values()) < 0.8 * best, fixed
    # round trip
    st.save(tmp_path / "stack.pt")
    back = StackedCombination.load(tmp_path / "stack.pt")
    assert np.array_equal(back.score_samples(P(S_test[:100])), st.score_samples(P(S_test[:100])))
    # the monotone constraint holds: raising any method's percentile never lowers the output
    base = np.full((1, 5), 0.5)
    for j in range(5):
        up = base.copy()
        up[0, j] = 0.999
        assert st.score_samples(up)[0] >= st.score_samples(base)[0]
    with pytest.raises(ValueError, match="same number of methods"):
        StackedCombination().fit(np.zeros((200, 3)), np.zeros((200, 2)))
    with pytest.raises(ValueError, match="fitted on 5 methods"):
        st.score_samples(np.zeros((3, 4)))


def test_tail_surprise_is_a_calibrated_background_p_value():
    """Under the background, exp(−surprise) is a uniform p-value: within the reference's statistics
    where the reference has events, within the exponential fit's uncertainty beyond its largest
    score (50 points: a factor ≈ 2 three units out) for an exponential-tailed score; for a lighter
    (Gaussian) tail the extrapolation is conservative. Scores beyond the reference keep their order."""
    rng = np.random.default_rng(3)
    n_ref, n_new = 5_000, 1_000_000
    for dist, exact in ((rng.gumbel, True), (rng.normal, False)):
        ref, new = dist(size=n_ref), dist(size=n_new)
        u = tail_surprise(new, ref)
        for t in (1.0, 2.0, 5.0):                        # empirical part
            p = np.exp(-t)
            sigma = n_new * np.sqrt(p * (1 - p) / n_ref)  # the reference's statistics dominate
            assert abs((u > t).sum() - n_new * p) < 4 * sigma, (dist.__name__, t)
        for t in (9.5, 11.0):                            # beyond the reference (1/5000 ≈ e^−8.5)
            ratio = (u > t).sum() / (n_new * np.exp(-t))
            assert ratio < 3 and (ratio > 1 / 3 or not exact), (dist.__name__, t, ratio)
        top = np.sort(new)[-100:]
        assert np.all(np.diff(tail_surprise(top, ref)) > 0) and top[0] > ref.max()
    with pytest.raises(ValueError, match="≥ 20 finite reference"):
        tail_surprise([1.0], np.arange(5.0))


def test_stack_on_a_background_template_sees_signal_that_leaks_into_the_sidebands():
    """Signal in the sidebands at the SR fraction: SR vs SB data carry no contrast, so the stack
    trained on them cannot find the informative method; trained on data SR vs a background
    template (and with the scores calibrated on it) it follows the informative method."""
    rng = np.random.default_rng(5)
    informative = 2
    _, S_sr = _five_methods(rng, 10_000, 300, informative)
    _, S_sb = _five_methods(rng, 10_000, 300, informative)          # contaminated sideband
    _, S_tmpl = _five_methods(rng, 20_000, 0, informative)          # background simulation
    y, S_test = _five_methods(rng, 20_000, 1_000, informative)
    U = lambda S: np.column_stack([tail_surprise(S[:, j], S_tmpl[:, j]) for j in range(5)])  # noqa: E731
    best = sic_summary(y, S_test[:, informative])["max_sic"]
    tmpl = sic_summary(y, StackedCombination(random_state=1).fit(U(S_sr), U(S_tmpl)).score_samples(U(S_test)))
    sb = sic_summary(y, StackedCombination(random_state=1).fit(U(S_sr), U(S_sb)).score_samples(U(S_test)))
    assert best > 10 and tmpl["max_sic"] > 0.9 * best, (tmpl["max_sic"], best)
    assert sb["max_sic"] < 0.8 * best, (sb["max_sic"], best)


def test_normalise_and_errors(tmp_path):
    ref = np.arange(100.0)
    p = normalise(np.array([-1.0, 49.5, 1000.0]), ref)
    assert 0 < p[0] < 0.01 and p[1] == pytest.approx(0.5, abs=0.01) and 0.99 < p[2] < 1
    with pytest.raises(ValueError, match="≥ 2 methods"):
        correlation_matrices({"a": ref})
    with pytest.raises(ValueError, match="non-finite scores from b"):
        correlation_matrices({"a": ref, "b": np.r_[ref[:-1], np.nan]})
    with pytest.raises(ValueError, match="unknown"):
        combine({"a": ref, "b": ref}, "median")
    with pytest.raises(ValueError, match="no reference scores for b"):
        combine({"a": ref, "b": ref}, reference={"a": ref})
    path = plot_matrix(np.eye(2), ["a", "b"], tmp_path / "m.png", "test")
    assert Path(path).stat().st_size > 1000


def test_benchmark_cli_help_and_bad_signal():
    script = str(ROOT / "benchmarks" / "dijet_methods.py")
    r = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--quick" in r.stdout and "--json" in r.stdout
    r = subprocess.run([sys.executable, script, "--quick", "--signals", "wprime_xy,nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown signal 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_benchmark_reevaluates_a_dump(tmp_path):
    """``--from-dump`` recomputes every figure from a dump's test scores and labels (no training);
    a method that separates the signal gets the highest SIC, ``background_at_efficiency`` counts the
    background passing each signal-efficiency cut, and an unreadable dump is one error line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dijet_methods", ROOT / "benchmarks" / "dijet_methods.py")
    dm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dm)

    rng = np.random.default_rng(0)
    names = (*dm.METHODS, "supervised", *(f"quak_w{w:g}" for w in dm.QUAK_DIAGNOSTIC_WEIGHTS), *dm.PRECOMPUTED)
    dump = {}
    for sig, good in (("sig_a", "cwola"), ("sig_b", "tagntrain")):
        y = np.r_[np.zeros(4_000, bool), np.ones(200, bool)]
        dump[f"{sig}/labels"] = y
        for k in names:
            dump[f"{sig}/score_{k}"] = rng.normal(size=len(y)) + 4.0 * y * (k in (good, "stack"))
    np.savez(tmp_path / "d.npz", **dump)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dijet_methods.py"), "--from-dump",
                        str(tmp_path / "d.npz"), "--json", str(tmp_path / "o.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "o.json").read_text())
    assert out["signals"] == ["sig_a", "sig_b"] and out["sic_cap"] == pytest.approx((20 / 4000) ** -0.5)
    assert out["goals"]["best_cms_method"] == {"sig_a": "cwola", "sig_b": "tagntrain"}
    assert out["goals"]["no_single_best"] and out["goals"]["stack_within_10pct"]
    bae = out["background_at_efficiency"]
    assert bae["cwola"]["sig_a"]["0.5"] < 20 < bae["vaeqr"]["sig_a"]["0.5"]     # 4σ shift vs none
    assert bae["comb:stack"]["sig_b"]["0.9"] <= bae["comb:rank_max"]["sig_b"]["0.9"]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dijet_methods.py"), "--from-dump",
                        str(tmp_path / "missing.npz")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot read dump" in r.stderr and len(r.stderr.strip().splitlines()) == 1

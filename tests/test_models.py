"""Estimators of lhcad.models: preprocessing Jacobian, save/load round trips, metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from lhcad.models.anode import ANODE
from lhcad.models.cathode import CATHODE, sample_mass
from lhcad.models.classifiers import HGBEnsemble, MLPEnsemble, make_classifier
from lhcad.models.cwola import CWoLa, kfold_scores, sideband_masks
from lhcad.models.data import DijetData
from lhcad.models.flows import ConditionalFlow
from lhcad.models.idealized import IdealizedAD, Supervised
from lhcad.models.metrics import sic_summary
from lhcad.models.preprocessing import LogitScaler
from lhcad.models.ranode import RANODE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FLOW = {"transforms": 2, "hidden": (16, 16), "epochs": 3, "batch_size": 256, "lr": 3e-3, "device": "cpu"}


@pytest.fixture(scope="module")
def toy():
    """Two-feature background with m-dependence plus a small localised signal."""
    rng = np.random.default_rng(0)
    n = 3000
    m = rng.uniform(3000, 4000, n)
    xb = np.column_stack([rng.gamma(3, 1, n) + (m - 3500) / 500, rng.beta(4, 3, n)])
    xs = np.column_stack([rng.normal(7, 0.3, 150), rng.beta(2, 8, 150)])
    ms = rng.normal(3500, 60, 150)
    return {"xb": xb, "mb": m, "xs": xs, "ms": ms}


# ------------------------------------------------------------------------------------ preprocessing
def test_logit_scaler_jacobian_integrates_to_one():
    """A standard normal in the scaled logit space, pulled back with the Jacobian, is a density in x."""
    x = np.random.default_rng(1).gamma(2.0, 1.5, size=(5000, 1))
    pre = LogitScaler(margin=0.05).fit(x)
    lo, hi = float(pre.lo_[0]), float(pre.hi_[0])

    def p(v):
        v = np.atleast_1d(v).reshape(-1, 1)
        return float(np.exp(stats.norm.logpdf(pre.transform(v)[:, 0]) + pre.log_abs_det_jacobian(v))[0])

    total, _ = integrate.quad(p, lo, hi, limit=400, points=np.linspace(lo, hi, 50)[1:-1])
    assert total == pytest.approx(1.0, abs=2e-3)


def test_logit_scaler_jacobian_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 3)) * [1, 10, 0.1]
    pre = LogitScaler().fit(x)
    pts, h = x[:20], 1e-6
    fd = np.zeros(len(pts))
    for j in range(3):
        dx = np.zeros(3)
        dx[j] = h
        fd += np.log(np.abs((pre.transform(pts + dx)[:, j] - pre.transform(pts - dx)[:, j]) / (2 * h)))
    np.testing.assert_allclose(pre.log_abs_det_jacobian(pts), fd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pre.inverse_transform(pre.transform(pts)), pts, rtol=1e-9, atol=1e-9)


def test_conditional_flow_density_integrates_to_one_in_feature_space(tmp_path):
    """A trained 1-D conditional flow, with the preprocessing Jacobian, is normalised in x for fixed m."""
    rng = np.random.default_rng(3)
    m = rng.uniform(3000, 4000, 3000)
    x = (rng.gamma(3, 1, 3000) + (m - 3000) / 1000).reshape(-1, 1)
    flow = ConditionalFlow(**FLOW).fit(x, m)
    lo, hi = float(flow.pre_.lo_[0]), float(flow.pre_.hi_[0])
    grid = np.linspace(lo, hi, 200_001)[1:-1].reshape(-1, 1)
    for mass in (3200.0, 3800.0):
        dens = np.exp(flow.log_prob(grid, np.full(len(grid), mass)))
        assert integrate.trapezoid(dens, grid[:, 0]) == pytest.approx(1.0, abs=0.01)
    # samples stay in the box and follow the density (mean close to the data's)
    s = flow.sample(np.full(2000, 3500.0), random_state=0)
    assert np.all((s > lo) & (s < hi))
    near = np.abs(m - 3500) < 100
    assert abs(s.mean() - x[near].mean()) < 0.5


# ------------------------------------------------------------------------------------ round trips
def _roundtrip(est, tmp_path, *args):
    before = est.score_samples(*args)
    path = est.save(tmp_path / f"{type(est).__name__}.pt")
    after = type(est).load(path).score_samples(*args)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
    return before


@pytest.mark.parametrize("kind", ["hgb", "mlp"])
def test_classifier_roundtrip_and_separation(kind, toy, tmp_path):
    X = np.concatenate([toy["xb"][:1000], toy["xs"]])
    y = np.r_[np.zeros(1000), np.ones(len(toy["xs"]))]
    params = {"max_iter": 30} if kind == "hgb" else {"epochs": 5, "n_best_epochs": 2, "device": "cpu"}
    clf = make_classifier(kind, n_members=2, **params).fit(X, y)
    s = _roundtrip(clf, tmp_path, X)
    assert sic_summary(y, s, min_background=5)["auc"] > 0.95
    assert isinstance(clf, HGBEnsemble if kind == "hgb" else MLPEnsemble)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        make_classifier(kind, nonsense=1)


def test_two_sample_estimators_roundtrip(toy, tmp_path):
    mixed = np.concatenate([toy["xb"][:1500], toy["xs"]])
    for cls in (IdealizedAD, Supervised, CWoLa):
        est = cls("hgb", {"max_iter": 20}).fit(mixed, toy["xb"][1500:])
        s = _roundtrip(est, tmp_path, toy["xs"])
        assert np.median(s) > np.median(est.score_samples(toy["xb"][:500]))


def test_flow_methods_roundtrip(toy, tmp_path):
    in_sr, in_sb = sideband_masks(toy["mb"], (3300, 3700), None)
    X_sr = np.concatenate([toy["xb"][in_sr], toy["xs"]])
    m_sr = np.concatenate([toy["mb"][in_sr], toy["ms"]])
    bounds = (np.r_[-2.0, 0.0], np.r_[20.0, 1.0])
    bkg = ConditionalFlow(**FLOW).fit(toy["xb"][in_sb], toy["mb"][in_sb], bounds=bounds)
    _roundtrip(bkg, tmp_path, X_sr, m_sr)

    cathode = CATHODE("hgb", {"max_iter": 20}, oversample=2).fit(X_sr, m_sr, background_flow=bkg)
    _roundtrip(cathode, tmp_path, X_sr)
    assert 0.3 < cathode.template_auc(X_sr[:300]) < 1.0

    anode = ANODE(FLOW).fit(X_sr, m_sr, background_flow=bkg, bounds=bounds)
    _roundtrip(anode, tmp_path, X_sr, m_sr)

    ranode = RANODE(transforms=1, hidden=(16, 16), epochs=3, device="cpu").fit(X_sr, m_sr, background_flow=bkg)
    _roundtrip(ranode, tmp_path, X_sr, m_sr)
    assert 0 < ranode.signal_fraction_ < 1
    with pytest.raises(ValueError, match="needs the resonant mass"):
        ranode.score_samples(X_sr, None)


def test_cathode_template_is_an_equal_mixture_of_its_flows(tmp_path):
    """A flow ensemble: two flows that each mis-model the background (one shifted up, one down) give
    a template whose mean is the mixture's — half the bias of either — and it survives save/load."""
    rng = np.random.default_rng(7)
    n = 3000
    m = rng.uniform(3000, 4000, n)
    X = np.column_stack([rng.normal(5, 1, n), rng.normal(0, 1, n)])
    box = (np.r_[-2.0, -8.0], np.r_[12.0, 8.0])
    up = ConditionalFlow(**FLOW).fit(X + [1.0, 0.0], m, bounds=box)
    down = ConditionalFlow(**FLOW).fit(X - [1.0, 0.0], m, bounds=box)
    sr = (m > 3300) & (m < 3700)
    means = {}
    for name, flows in {"up": up, "down": down, "mix": [up, down]}.items():
        c = CATHODE("hgb", {"max_iter": 20}, oversample=1).fit(X[sr], m[sr], background_flow=flows)
        means[name] = c.make_template(8000, 3)[0][:, 0].mean()
    assert means["up"] > 5.6 and means["down"] < 4.4, means
    assert abs(means["mix"] - (means["up"] + means["down"]) / 2) < 0.1, means
    path = c.save(tmp_path / "mix.pt")
    again = CATHODE.load(path)
    assert len(again.background_flows_) == 2
    np.testing.assert_allclose(again.make_template(500, 4)[0], c.make_template(500, 4)[0], rtol=1e-5)


def test_tight_bounds_keep_template_inside_physical_edges():
    """Bounded features (τ21 reflected into [0.1, 0.98], Δm ≥ 0) have density at their edges. With the
    default box of :meth:`DijetData.bounds` (hugging the data) the flow's template cannot cross the
    edges; a 2 % margin lets it leak there — what CATHODE's null-test classifier used to find."""
    rng = np.random.default_rng(6)
    n = 4000
    m = rng.uniform(3000, 4000, n)
    t21 = 0.8 + (m - 3500) / 10000 + 0.12 * rng.standard_normal(n)
    t21 = np.where(t21 > 0.98, 1.96 - t21, t21)
    X = np.c_[t21, np.abs(60 * rng.standard_normal(n))]
    d = DijetData(X=X, m=m, dataset=np.zeros(n, int), truth=np.zeros(n, int), features=("t", "dm"),
                  datasets=["data"])
    lo, hi = d.bounds()
    assert np.all(lo <= X.min(0)) and np.all(hi >= X.max(0))
    assert np.all((hi - lo) < 1.002 * (X.max(0) - X.min(0)))
    leaks = {}
    for name, box in {"tight": d.bounds(), "wide": d.bounds(margin=0.02)}.items():
        flow = ConditionalFlow(**{**FLOW, "epochs": 2}).fit(X, m, bounds=box)
        x = flow.sample(rng.uniform(3300, 3700, 20000), random_state=1)
        leaks[name] = np.mean((x[:, 0] > 0.98 + 1e-3) | (x[:, 1] < -0.1))
    assert leaks["tight"] == 0 and leaks["wide"] > 1e-3, leaks


def test_unfitted_estimator_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        CATHODE().score_samples(np.zeros((1, 2)))


def test_sample_mass_stays_in_range():
    m = np.random.default_rng(4).uniform(3300, 3700, 500)
    s = sample_mass(m, 2000, random_state=1)
    assert len(s) == 2000 and s.min() >= m.min() and s.max() <= m.max()
    assert abs(s.mean() - m.mean()) < 15


# ------------------------------------------------------------------------------------ metrics
def test_sic_summary_known_gaussians():
    rng = np.random.default_rng(5)
    nb, ns = 200_000, 2000
    y = np.r_[np.zeros(nb), np.ones(ns)]
    s = np.r_[rng.normal(0, 1, nb), rng.normal(2, 1, ns)]
    r = sic_summary(y, s)
    # analytic: AUC = Φ(2/√2); SIC(c) = (1-Φ(c-2)) / √(1-Φ(c)), maximised above the FPR floor
    assert r["auc"] == pytest.approx(stats.norm.cdf(2 / np.sqrt(2)), abs=0.01)
    c = np.linspace(0, stats.norm.isf(r["fpr_floor"]), 2000)
    analytic = np.max(stats.norm.sf(c - 2) / np.sqrt(stats.norm.sf(c)))
    assert r["max_sic"] == pytest.approx(analytic, rel=0.15)
    assert r["fpr_floor"] == pytest.approx(1e-4) and r["rule"] == "FPR >= 0.0001"
    small = sic_summary(y[-4000:], s[-4000:])
    assert "20 background events" in small["rule"] and small["fpr_floor"] == pytest.approx(0.01)
    with pytest.raises(ValueError, match="NaN"):
        sic_summary(y, np.where(y == 1, np.nan, s))


def test_cwola_kfold_beats_random_on_known_truth(toy):
    """CWoLa on a toy with known truth: SR (background + signal) vs SB, out-of-fold scores."""
    in_sr, in_sb = sideband_masks(toy["mb"], (3300, 3700), 300)
    X_sr = np.concatenate([toy["xb"][in_sr], toy["xs"]])
    truth = np.r_[np.zeros(in_sr.sum()), np.ones(len(toy["xs"]))]
    s_sr, _ = kfold_scores(lambda: CWoLa("hgb", {"max_iter": 50}), X_sr, toy["xb"][in_sb], folds=3)
    r = sic_summary(truth, s_sr, min_background=20)
    assert r["max_sic"] > 3 and r["auc"] > 0.8

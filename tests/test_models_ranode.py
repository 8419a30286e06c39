"""R-ANODE's signal fraction: the EM update recovers a known mixture weight, from far-off starts."""

from __future__ import annotations

import numpy as np
import pytest

from lhcad.models.flows import ConditionalFlow
from lhcad.models.ranode import RANODE, em_fraction

TRUE_W = 0.05


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_em_fraction_is_the_mixture_mle_for_exact_densities():
    """With the true densities (two Gaussians) the EM weight equals the likelihood maximum found by a
    grid scan, and both sit within 3 standard errors of the injected fraction."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    n = 40_000
    x = np.where(rng.random(n) < TRUE_W, rng.normal(2.5, 0.3, n), rng.normal(0, 1, n))
    log_ratio = norm.logpdf(x, 2.5, 0.3) - norm.logpdf(x, 0, 1)
    grid = np.linspace(0.02, 0.08, 601)
    ll = [np.sum(np.log(w * np.exp(log_ratio) + 1 - w)) for w in grid]
    for start in (0.001, 0.5):
        w = em_fraction(log_ratio, start)
        assert w == pytest.approx(grid[int(np.argmax(ll))], abs=2e-4)
        assert abs(w - TRUE_W) < 3 * np.sqrt(TRUE_W * (1 - TRUE_W) / n)


@pytest.fixture(scope="module")
def toy():
    """A frozen background flow trained on 20 k background events, SR data with 5 % signal."""
    rng = np.random.default_rng(0)

    def bkg(n):
        return np.column_stack([rng.gamma(3, 1, n), rng.beta(4, 3, n)]), rng.uniform(3300, 3700, n)

    xb, mb = bkg(20_000)
    flow = ConditionalFlow(transforms=3, hidden=(32, 32), epochs=20, batch_size=256, lr=3e-3,
                           device="cpu").fit(xb, mb, bounds=(np.r_[0.0, 0.0], np.r_[20.0, 1.0]))
    n_sig = int(8000 * TRUE_W)
    xd, md = bkg(8000 - n_sig)
    xs = np.column_stack([rng.normal(7, 0.3, n_sig), rng.beta(2, 8, n_sig)])
    return flow, np.concatenate([xd, xs]), np.concatenate([md, rng.uniform(3300, 3700, n_sig)])


@pytest.mark.parametrize("w_init", [0.001, 0.2])
def test_ranode_em_recovers_injected_signal_fraction(toy, w_init):
    """From w_init 50x below and 4x above the truth, the fitted w lands within ±0.025 of 0.05 (the
    background flow is an imperfect 20-epoch fit, which biases w up by ~0.01); the score ranks
    signal above background; w is logged per epoch."""
    flow, X, m = toy
    r = RANODE(transforms=2, hidden=(16, 16), epochs=30, batch_size=256, lr=3e-3, w_init=w_init,
               device="cpu").fit(X, m, background_flow=flow)
    assert abs(r.signal_fraction_ - TRUE_W) < 0.025, r.fraction_history_
    assert len(r.fraction_history_) == 30
    assert r.signal_fraction_ in r.fraction_history_          # w of the kept (best-validation) epoch
    s = r.score_samples(X, m)
    n_sig = int(8000 * TRUE_W)
    assert np.median(s[-n_sig:]) > np.quantile(s[:-n_sig], 0.99)


def test_ranode_gradient_fraction_and_bad_update(toy, tmp_path):
    """``fraction_update="gradient"``: θ = logit w in its own Adam group moves w off w_init; the
    history survives save/load; an unknown update rule is one clear error."""
    flow, X, m = toy
    r = RANODE(transforms=1, hidden=(16, 16), epochs=3, w_init=0.01, fraction_update="gradient",
               fraction_lr=0.1, device="cpu").fit(X, m, background_flow=flow)
    assert abs(r.signal_fraction_ - 0.01) > 0.002
    r.save(tmp_path / "r.pt")
    assert RANODE.load(tmp_path / "r.pt").fraction_history_ == r.fraction_history_
    with pytest.raises(ValueError, match="fraction_update 'adam' unknown"):
        RANODE(fraction_update="adam", epochs=1, device="cpu").fit(X, m, background_flow=flow)

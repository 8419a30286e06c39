"""L1 scores are keyed by model file and background split: stale or NaN scores give one clear error
(issue 9: ``benchmarks/l1.py --reuse --train-seed N`` used to evaluate stale IN-VAE scores holding
NaN and failed inside scikit-learn); the VAE recipe options (free bits, input standardisation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_l1_toy import toy_particles, toy_store

from lhcad.models import l1_jobs
from lhcad.models.l1_vae import VAE
from lhcad.store import open_store, read_scores, write_scores


@pytest.fixture()
def seeded(tmp_path):
    store = toy_store(tmp_path / "s.zarr", n_bkg=3000, n_sig=200, blackbox=0)
    models = tmp_path / "models"
    l1_jobs.train(store, models, ("ae", "vae"), epochs=1, seed=0)
    l1_jobs.score(store, models, skip_training_rows=True)
    return store, models


def test_other_train_seed_rescores_or_rejects(seeded):
    store, models = seeded
    res = l1_jobs.evaluate(store, models, fprs=(1e-2,), latent_events=500)
    assert set(res["auc"]) == {"ae", "vae_mu2", "vae_loss", "vae_kl"}
    # retrain only the AE with another seed: split.npz changes, the VAE (seed 0) and its scores are stale
    l1_jobs.train(store, models, ("ae",), epochs=1, seed=1)
    with pytest.raises(l1_jobs.StaleScoresError, match=r"model ae, score ae: l1/scores/ae__mse was written by another model"):
        l1_jobs.evaluate(store, models, fprs=(1e-2,), names=["ae"])
    # the VAE is rejected (trained on the other split), the AE only needs re-scoring
    with pytest.raises(l1_jobs.StaleScoresError, match=r"model vae: .*vae.pt was trained on another background split"):
        l1_jobs.kept_models_to_rescore(store, models, ["ae", "vae"])
    assert l1_jobs.kept_models_to_rescore(store, models, ["ae"]) == ["ae"]
    with pytest.raises(l1_jobs.StaleScoresError, match=r"model vae, score vae_mu2: .*trained on another background split"):
        l1_jobs.evaluate(store, models, fprs=(1e-2,), names=["vae"])
    l1_jobs.score(store, models, names=["ae"], skip_training_rows=True)
    assert l1_jobs.kept_models_to_rescore(store, models, ["ae"]) == []
    res = l1_jobs.evaluate(store, models, fprs=(1e-2,), names=["ae"], latent_events=500)
    assert set(res["auc"]) == {"ae"} and 0.5 < res["auc"]["ae"]["ato4l"] <= 1


def test_nan_scores_name_model_and_key(seeded):
    store, models = seeded
    root = open_store(store, mode="a")
    key = "vae__mu2"
    attrs = dict(root["l1"]["scores"][key].attrs)
    s = read_scores(root, "l1", key)
    test_rows = np.load(models / "split.npz")["test_rows"]
    s[test_rows[:3]] = np.nan                      # e.g. a diverged model
    write_scores(root, "l1", key, s, attrs=attrs)
    with pytest.raises(l1_jobs.StaleScoresError, match=r"model vae, score l1/scores/vae__mu2: 3 NaN scores"):
        l1_jobs.evaluate(store, models, fprs=(1e-2,))


def test_ae_std_standardised_and_folded():
    p = toy_particles("sm", 1000)
    ae = l1_jobs.make_model("ae_std", epochs=1).fit(p, progress=False)
    assert ae.standardise and not l1_jobs.make_model("ae").standardise
    x = ae.transform(p).astype(np.float64)
    h = x
    for layer in ae.dense_layers():
        h = h @ layer.weight + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, 0)
    np.testing.assert_allclose(((h - x) ** 2).mean(1), ae.score_samples(p), rtol=1e-3, atol=1e-6)


def test_vae_free_bits_and_folded_standardisation():
    p = toy_particles("sm", 2000)
    vae = VAE(epochs=2, beta=1.0, free_bits=0.5, standardise=True).fit(p, progress=False)
    x = vae.transform(p)
    # the deployed layers (standardisation folded into the first one) give the module's mu
    h = x.astype(np.float64)
    for layer in vae.dense_layers():
        h = h @ layer.weight + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, 0)
    np.testing.assert_allclose((h**2).sum(1), vae.score_samples(p), rtol=1e-3, atol=1e-5)
    assert float(vae.module_.scale.min()) == pytest.approx(0.01) and float(vae.module_.shift.abs().max()) > 0
    # free bits: the training KL term counts each latent dimension as at least free_bits nats
    with torch.no_grad():
        loss = vae._loss(vae.module_.eval(), torch.from_numpy(x[:512]), epoch=10)
        _, mse, kl = vae._terms(vae.module_, torch.from_numpy(x[:512]), sample=False, per_dim=True)
    assert float(loss) >= float(mse.mean()) + 1.0 * 8 * 0.5 / 57 - 1e-6
    assert float(loss) == pytest.approx(float(mse.mean() + kl.mean(0).clamp(min=0.5).sum() / 57), rel=1e-5)


def test_recipe_is_the_cli_and_pipeline_default():
    from lhcad.config import L1Config
    from lhcad.models.l1_cli import _params

    assert L1Config().vae_standardise is True and L1Config().vae_beta == 1.0 and L1Config().vae_free_bits == 0.0
    assert _params(["ae", "vae"], None, True) == {"ae": {}, "vae": {"standardise": True}}
    assert _params(["vae"], 256, False) == {"vae": {"batch_size": 256, "standardise": False}}

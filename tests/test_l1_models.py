"""L1 AD: preprocessing, metrics (TPR at FPR with binomial errors, FLOPs), the estimators and the
train → score → evaluate chain on a toy store (CLI and ``lhcad run`` stage)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from scipy.stats import norm
from test_l1_toy import toy_particles, toy_store

from lhcad.cli import main as _main
from lhcad.models import l1_metrics as M
from lhcad.models.l1_ae import DenseAE
from lhcad.models.l1_base import load_model
from lhcad.models.l1_invae import INVAE, relation_matrices
from lhcad.models.l1_preprocess import L1Preprocessor, quantize_fixed
from lhcad.models.l1_vae import VAE


def test_preprocessor_keeps_padding_and_round_trips():
    p = toy_particles("sm", 500)
    pre = L1Preprocessor().fit(p)
    x = pre.transform(p).reshape(-1, 19, 3)
    padded = p[..., 0] == 0
    assert padded.any() and (x[padded] == 0).all()
    assert (x[~padded][:, 0] > 0).all()          # a present object never looks padded
    assert np.quantile(x[~padded][:, 0], 0.5) < 1.0
    again = L1Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    np.testing.assert_array_equal(again.transform(p), pre.transform(p))
    with pytest.raises(ValueError, match=r"\(N, 19, 3\)"):
        pre.transform(np.zeros((3, 57)))


def test_quantize_fixed_grid_and_saturation():
    q = quantize_fixed(np.array([0.1, 1000.0, -1000.0, 0.50049]), 16, 6)
    step = 2.0**-10
    assert q[0] == pytest.approx(round(0.1 / step) * step)
    assert q[1] == 32 - step and q[2] == -32


def test_tpr_at_fpr_matches_analytic_and_binomial_error():
    rng = np.random.default_rng(1)
    bkg, sig = rng.normal(0, 1, 400_000), rng.normal(3, 1, 20_000)
    r = M.tpr_at_fpr(bkg, sig, fpr=1e-4)
    expected = norm.sf(norm.isf(1e-4) - 3)              # threshold at the 1e-4 tail of N(0,1)
    assert r["n_bkg_above"] == 40 and r["fpr"] == pytest.approx(1e-4)
    assert r["tpr_err"] == pytest.approx(np.sqrt(r["tpr"] * (1 - r["tpr"]) / 20_000))
    assert r["tpr_lo"] < r["tpr"] < r["tpr_hi"] < r["tpr_upper_95"]
    # no signal event passes: binomial error 0, the 95 % upper bound ~ 3/n_sig
    z = M.tpr_at_fpr(bkg, rng.normal(-3, 1, 20_000), fpr=1e-4)
    assert z["tpr"] == 0 and z["tpr_err"] == 0 and z["tpr_upper_95"] == pytest.approx(-np.log(0.05) / 20_000, rel=1e-3)
    # the threshold itself fluctuates (40 background events): allow 4 sigma of both effects
    assert abs(r["tpr"] - expected) < 0.05
    with pytest.raises(ValueError, match="needs at least 100000 background events"):
        M.tpr_at_fpr(bkg[:50_000], sig, fpr=1e-5)
    assert M.fpr_key(1e-5) == "tpr_at_fpr_1e-5" and M.fpr_key(0.001) == "tpr_at_fpr_0.001"


def test_flops_ae_baseline_and_vae_encoder_budget():
    p = toy_particles("sm", 400)
    ae = DenseAE(epochs=1).fit(p, progress=False)
    vae = VAE(epochs=1).fit(p, progress=False)
    # 57-16-3-16-57: 2 x 1920 MACs + 92 biases + 32 ReLU outputs
    assert M.model_flops(ae)["flops"] == 2 * (57 * 16 + 16 * 3 + 3 * 16 + 16 * 57) + 92 + 32
    f = M.model_flops(vae)
    assert f["flops"] == 2 * (57 * 24 + 24 * 12 + 12 * 8) + 44 + 36
    assert f["flops_with_score"] <= 4054                 # the ADC2021 dense-AE reference
    invae = INVAE(epochs=1).fit(p[:200], progress=False)
    assert M.model_flops(invae)["flops"] > 50 * f["flops"]
    # pruning half the weights of a layer halves its MAC FLOPs
    layers = vae.dense_layers()
    layers[0].weight[:, ::2] = 0
    assert M.dense_flops(layers, nonzero=True) == f["flops"] - 2 * 57 * 12


def test_interaction_network_graph():
    rs, rr = relation_matrices(19)
    assert rs.shape == (19, 342) and (rs.sum(0) == 1).all() and (rr.sum(0) == 1).all()
    assert not (rs * rr).any()                           # no self-loops
    assert (rs.sum(1) == 18).all() and (rr.sum(1) == 18).all()
    p = toy_particles("ato4l", 300)
    m = INVAE(epochs=1).fit(p, progress=False)
    s = m.score_all(p)
    assert np.isfinite(s["mu2"]).all() and s["latent"].shape == (300, 8)
    # padded objects do not change the encoding: appending zeros in empty slots is a no-op by construction,
    # while a new real object does change it
    q = p.copy()
    empty = np.flatnonzero(q[0, 9:, 0] == 0)[0] + 9
    q[0, empty] = [40.0, 0.3, 1.0]
    assert m.score_samples(q[:1])[0] != m.score_samples(p[:1])[0]


def test_save_load_round_trip(tmp_path):
    p = toy_particles("sm", 300)
    vae = VAE(epochs=1).fit(p, progress=False)
    vae.save(tmp_path / "vae.pt")
    again = load_model(tmp_path / "vae.pt")
    np.testing.assert_allclose(again.score_samples(p), vae.score_samples(p), rtol=1e-6)
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ValueError, match="junk.pt: not a saved lhcad L1 model"):
        load_model(tmp_path / "junk.pt")


def main(argv):
    """``lhcad.cli.main`` returning normally on success (typer exits 0 via SystemExit)."""
    try:
        _main(argv)
    except SystemExit as exc:
        if exc.code:
            raise


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("l1")
    store = toy_store(d / "store.zarr", n_bkg=16_000, n_sig=1500, blackbox=5000)
    main(["l1", "train", "--store", store, "--out", str(d / "models"), "--models", "ae,vae", "--epochs", "4",
          "--batch-size", "256"])
    main(["l1", "score", "--store", store, "--models", str(d / "models")])
    main(["l1", "evaluate", "--store", store, "--models", str(d / "models"), "--fpr", "1e-5", "--fpr", "1e-3",
          "--json", str(d / "m.json"), "--blackbox-score", "ae"])
    return d, store, json.loads((d / "m.json").read_text())


def test_train_score_evaluate_finds_toy_signals(trained):
    d, store, res = trained
    assert res["n_background_test"] == 8_000
    # physics: the 4-lepton signal is far from the 1-lepton background for both models
    assert res["auc"]["ae"]["ato4l"] > 0.9
    assert res["auc"]["vae_loss"]["ato4l"] > 0.8
    assert 0 <= res["auc"]["vae_mu2"]["ato4l"] <= 1
    assert res["tpr_at_fpr_0.001"]["ae"]["ato4l"]["tpr"] > 0.05
    # 1e-5 cannot be reached with 15k held-out events: said so, not dropped
    assert res["tpr_at_fpr_1e-5"]["ae"]["ato4l"]["tpr"] is None
    assert "100000 background events" in res["tpr_at_fpr_1e-5"]["ae"]["ato4l"]["error"]
    assert res["flops"]["vae"]["flops"] <= 4054
    assert set(res["latent"]["vae"]) >= {"correlation", "pca_explained_variance_ratio", "pca_loadings"}
    assert np.asarray(res["latent"]["vae"]["correlation"]).shape == (8, 8)
    assert all(p.endswith(".png") for p in res["plots"]) and len(res["plots"]) == 4 + 2


def test_blackbox_submission(trained):
    d, store, res = trained
    with h5py.File(res["blackbox"]["path"]) as f:
        ids, scores = f["event_ids"][...], f["scores"][...]
        perf = json.loads(f.attrs["performance"])
    assert len(ids) == 1000 and len(set(ids)) == 1000 and ids.max() < 5000
    assert (np.diff(scores) <= 0).all()
    assert perf["model"] == "ae" and set(perf["auc"]) == {"ato4l", "lq_btau", "h0_tautau", "hch_taunu"}
    # the injected 1 % A->4l events are enriched among the 1000 most anomalous (top 20 %: at most 5x)
    from lhcad.store import read_columns

    cols = read_columns(store, "l1", ["dataset", "truth_label"])
    truth = cols["truth_label"][cols["dataset"] == 5]
    assert truth[ids].mean() > 2.5 * truth.mean()


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["l1", "evaluate", "--store", str(tmp_path / "none.zarr"), "--models", str(tmp_path)])
    assert e.value.code == 2
    store = toy_store(tmp_path / "s.zarr", n_bkg=200, n_sig=20, blackbox=0)
    with pytest.raises(SystemExit) as e:
        main(["l1", "train", "--store", store, "--out", str(tmp_path / "m"), "--models", "ae,bogus"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["l1", "score", "--store", store, "--models", str(tmp_path / "empty")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown L1 model 'bogus'" in err and "no saved L1 models" in err


def test_pipeline_stage(tmp_path):
    from lhcad.config import PipelineConfig
    from lhcad.models.l1_jobs import pipeline_stage
    from lhcad.pipeline import STAGE_FUNCTIONS, RunContext

    assert STAGE_FUNCTIONS["l1"] == "lhcad.models.l1_jobs:pipeline_stage"
    store = toy_store(tmp_path / "s.zarr", n_bkg=4000, n_sig=300, blackbox=500)
    cfg = PipelineConfig.model_validate({"store": store, "workdir": str(tmp_path / "w"), "cluster": {"type": "iterative"},
                                         "l1": {"models": ["vae"], "epochs": 1, "fprs": [1e-2]}})
    out = pipeline_stage(cfg, RunContext(cfg, "<test>"))
    json.dumps(out)
    assert out["figures"]["n_background_test"] == 2000
    assert 0 <= out["figures"]["tpr_at_fpr_0.01"]["vae_mu2"]["ato4l"] <= 1
    assert all(p.endswith(".png") for p in out["plots"])

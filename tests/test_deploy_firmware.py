"""Deploy stage on a small model: μ scaled to unit RMS, range-derived fixed-point formats and bit-width
search, QKeras QAT + tfmot pruning to 50 %, hls4ml (Vitis, io_parallel, Latency) project written and
compiled with g++, C simulation vs QKeras (and vs the float model), artefact bundle.

The model is trained with the recipe's standardised encoder input (``standardise=True``): the deploy stage
unfolds the saved scale (the firmware reads x / scale, the mean offset stays in dense1's bias).
One module-scoped build (TensorFlow import + g++ compile dominate). The TPR comparison uses
FPR = 1e-3 instead of 1e-5: the check sample holds 10 k held-out background events, and 1e-5 would
need 1 M (stated in the report as ``fpr_for_tpr``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile

import pytest
from test_l1_toy import toy_store

from lhcad.cli import main


@pytest.fixture(scope="module")
def firmware(tmp_path_factory):
    from lhcad.config import DeployConfig
    from lhcad.deploy.firmware import build_firmware
    from lhcad.models import l1_jobs

    d = tmp_path_factory.mktemp("deploy")
    store = toy_store(d / "store.zarr", n_bkg=20_000, n_sig=1000, blackbox=0)
    l1_jobs.train(store, d / "models", ["vae"], epochs=3, params={"vae": {"batch_size": 512, "standardise": True}})
    cfg = DeployConfig(qat_epochs=8, qat_events=10_000, check_events=10_000)
    rep = build_firmware(d / "models" / "vae.pt", store, d / "fw", cfg)
    return d, rep


def test_pruned_to_half(firmware):
    _, rep = firmware
    sp = rep["sparsity"]
    assert sp["target"] == 0.5
    assert abs(sp["pruned"]["total"] - 0.5) <= 0.02
    # first layer first (<= 80 % per layer): the μ head keeps all its weights
    assert sp["target_per_layer"]["mu"] == 0 and sp["pruned"]["per_layer"]["mu"] == 0
    assert all(abs(sp["pruned"]["per_layer"][k] - t) <= 0.02 for k, t in sp["target_per_layer"].items())
    # quantisation can only add zeros; the non-zero FLOPs count follows the quantised weights
    assert sp["after_quantization"]["total"] >= sp["pruned"]["total"]
    f = rep["flops"]
    assert f["dense"] == 2 * (57 * 24 + 24 * 12 + 12 * 8) + 44 + 36 and f["dense"] + f["score"] <= 4054
    assert f["nonzero"] < 0.6 * f["dense"]


def test_csim_matches_qkeras(firmware):
    d, rep = firmware
    acc = rep["accuracy"]
    assert acc["n_background"] == 10_000 and acc["n_events"] == 14_000
    assert acc["spearman_hls_vs_qkeras"] >= 0.99
    assert acc["fpr_for_tpr"] == 1e-3
    for sig, t in acc["tpr"].items():
        if t["qkeras"] > 0:
            assert abs(t["hls_over_qkeras"] - 1) <= 0.05, sig
    # QKeras vs the float model: the scaled μ head, the unfolded input scale and range-derived formats keep
    # the ranking. Measured on this toy (standardised VAE, 3 training epochs): 0.86 with 8 QAT epochs (0.77
    # with 4, 0.90 with 16; 0.998 without pruning: the 64 % pruned first layer is what costs here); the
    # folded standardisation gave 0.47. Benchmark VAE (50 k QAT events, 5 epochs): 0.956.
    assert acc["spearman_qkeras_vs_float"] >= 0.8 and -1 <= acc["spearman_qkeras_vs_float_tail"] <= 1
    assert rep["rescaling"]["output_scale"] > 1 and len(rep["rescaling"]["input_scale"]) == 57
    # the model's own standardisation is the firmware input transform (scale unfolded, offset in the bias)
    import numpy as np

    from lhcad.models.l1_base import load_model
    it = rep["input_transform"]
    model = load_model(d / "models" / "vae.pt")
    assert it["source"].startswith("model standardisation") and "upstream" in it["realised_as"]
    assert np.allclose(it["input_scale"], model.module_.scale.numpy(), atol=1e-6)
    assert it["cost_if_in_firmware"]["latency_cycles_total"] == rep["latency"]["cycles"] + 1
    assert it["cost_if_in_firmware"]["dsp_upper_bound_total"] > rep["resources"]["dsp_upper_bound"]
    assert it["saturation"]["sm"]["fraction_events"] <= 1e-3   # background inputs inside the ap_fixed range
    bw = rep["bit_widths"]
    tried = bw["bits_search"]["tried"]
    assert tried[-1]["spearman_vs_float"] >= 0.99 and all(t["spearman_vs_float"] < 0.99 for t in tried[:-1])
    res = acc["quantisation_vs_signal"]
    wb = tried[-1]["weight_bits"]
    for name, lsb in res["weight_lsb"].items():       # LSB = 2^-(bits - integer - 1), integer from the weight range
        bits, i = map(int, re.match(r"quantized_bits\((\d+),(\d+)\)", bw["weights_biases"][name]).groups())
        assert bits == wb
        assert lsb == 2.0 ** -(wb - i - 1) and res["float_ranges"]["weight_max"][name] < 2.0**i
    assert len(res["float_output_std_background"]) == 8
    # the g++-built C simulation library exists
    assert list((d / "fw" / "hls_project").glob("firmware/*.so"))


def test_bundle_and_report(firmware):
    d, rep = firmware
    fw = d / "fw"
    saved = json.loads((fw / "firmware_report.json").read_text())
    assert saved["hls4ml"]["part"].startswith("xcvu9p") and saved["hls4ml"]["io_type"] == "io_parallel"
    assert saved["hls4ml"]["strategy"] == "Latency" and saved["hls4ml"]["backend"] == "Vitis"
    assert saved["latency"]["estimate"] is True and "no HLS" in saved["latency"]["note"]
    assert saved["latency"]["ns"] == saved["latency"]["cycles"] * 5.0
    assert "rule" in saved["resources"] and saved["resources"]["dsp_upper_bound"] > 0
    wb = saved["bit_widths"]["bits_search"]["tried"][-1]["weight_bits"]
    assert saved["bit_widths"]["per_layer"]["dense1"]["weight"].startswith(f"fixed<{wb},")
    assert saved["bit_widths"]["per_layer"]["output_q"]["result"].startswith("fixed<18,")
    assert "SAT" in saved["bit_widths"]["per_layer"]["output_q"]["result"]     # saturating output
    with tarfile.open(fw / "hls_project.tar.gz") as tar:
        names = tar.getnames()
    assert "hls_project/firmware/l1ad_encoder.cpp" in names and "hls_project/build_prj.tcl" in names
    cfg_text = (fw / "hls4ml_config.yml").read_text()  # hls4ml writes python-tagged YAML: check the keys as text
    assert "Backend: Vitis" in cfg_text and "IOType: io_parallel" in cfg_text and "Strategy: Latency" in cfg_text
    script = (fw / "build_vitis.sh").read_text()
    assert "vitis_hls -f build_prj.tcl" in script and (fw / "build_vitis.sh").stat().st_mode & 0o100


def test_deploy_import_is_light_and_cli_errors(tmp_path, capsys):
    code = "import sys, lhcad.deploy, lhcad.deploy.cli, lhcad.deploy.firmware; print(sorted(m for m in ('tensorflow', 'hls4ml', 'qkeras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with pytest.raises(SystemExit) as e:
        main(["deploy", "firmware", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "fw")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["deploy", "firmware", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "fw"),
              "--sparsity", "1.5"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "missing.pt: model file not found" in err and "sparsity" in err


def test_output_scale_keeps_the_ranking_and_formats_cover_the_ranges():
    """A collapsed μ head (μ ~ 1e-3) scaled to unit RMS ranks events exactly as before; the integer bits
    derived from the ranges cover the weights and (apart from the rare tail) the activations, tightly."""
    import numpy as np
    from scipy.stats import spearmanr

    from lhcad.deploy import ranges
    from lhcad.models.l1_base import DenseLayer

    rng = np.random.default_rng(3)
    layers = [DenseLayer(rng.normal(0, 0.2, (57, 24)), rng.normal(0.1, 0.05, 24), "relu", "dense1"),
              DenseLayer(rng.normal(0, 0.2, (24, 12)), rng.normal(0.1, 0.05, 12), "relu", "dense2"),
              DenseLayer(rng.normal(0, 2e-3, (12, 8)), np.zeros(8), "linear", "mu")]
    x = rng.uniform(-1, 1, (20_000, 57))
    scaled, s = ranges.scale_output(layers, x)
    mu0, mu1 = ranges.forward(layers, x)[-1], ranges.forward(scaled, x)[-1]
    assert s > 50 and np.sqrt(np.mean(mu1**2)) == pytest.approx(1.0)
    assert spearmanr((mu0**2).sum(1), (mu1**2).sum(1)).statistic == pytest.approx(1.0)
    f = ranges.formats(scaled, x)
    for layer in scaled:
        wmax = max(np.abs(layer.weight).max(), np.abs(layer.bias).max())
        i = f["weights"][layer.name]
        assert wmax < 2.0**i and (i == 0 or wmax >= 2.0 ** (i - 1))
    outs = ranges.forward(scaled, x)
    for layer, o in zip(scaled[:2], outs[:2], strict=True):
        assert np.mean(o >= 2.0 ** f["activations"][layer.name]) <= 1e-5
    assert np.abs(mu1).max() * 4 < 2.0 ** f["output"]          # 2 bits of headroom above the background
    assert f["input"] == 2                                       # |x| < 1, 1 bit of headroom, the sign bit


def test_unfolded_standardisation_is_the_same_function():
    """Unfolding a folded (x - m) / s gives the trained first-layer weights back and, on inputs x / s, the
    same network output as the folded layers on x (the mean offset stays exactly in the bias)."""
    import numpy as np
    import torch

    from lhcad.deploy import ranges
    from lhcad.models.l1_base import DenseLayer, fold_standardisation

    rng = np.random.default_rng(5)
    w1 = rng.normal(0, 0.3, (57, 6))
    layers = [DenseLayer(w1.copy(), rng.normal(0, 0.1, 6), "relu", "dense1"),
              DenseLayer(rng.normal(0, 0.3, (6, 3)), np.zeros(3), "linear", "mu")]
    m, s = rng.normal(0, 0.5, 57), np.maximum(rng.uniform(0, 1, 57), 0.01)
    mod = torch.nn.Module()
    mod.register_buffer("shift", torch.tensor(m, dtype=torch.float64))
    mod.register_buffer("scale", torch.tensor(s, dtype=torch.float64))
    folded = fold_standardisation([DenseLayer(la.weight.copy(), la.bias.copy(), la.activation, la.name) for la in layers], mod)

    class Model:
        module_ = mod

    shift, scale = ranges.model_standardisation(Model)
    unfolded, r = ranges.unfold_input_scale(folded, scale)
    assert np.allclose(r, s) and np.allclose(unfolded[0].weight, w1, rtol=1e-5, atol=1e-6)
    x = rng.normal(0, 1, (500, 57))
    ref = ranges.forward(layers, (x - m) / s)[-1]
    assert np.allclose(ranges.forward(unfolded, x / r)[-1], ref, rtol=1e-4, atol=1e-4)
    assert np.allclose(ranges.forward(folded, x)[-1], ref, rtol=1e-4, atol=1e-4)
    sat = ranges.input_saturation(np.array([[0.5, 100.0], [1.0, -2.0]]), 16, 3)   # range [-4, 4)
    assert sat["events"] == 1 and sat["values"] == 1 and sat["features"] == [1]

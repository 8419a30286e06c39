"""The generate stage of ``lhcad run``: kinds with a config are generated, None skips a kind."""

from __future__ import annotations

import json

from lhcad.config import PipelineConfig
from lhcad.generate.stage import pipeline_stage
from lhcad.pipeline import STAGE_FUNCTIONS, RunContext


def test_pipeline_stage_generates_configured_kinds(tmp_path):
    assert STAGE_FUNCTIONS["generate"] == "lhcad.generate.stage:pipeline_stage"
    cfg = PipelineConfig.model_validate({
        "workdir": str(tmp_path),
        "store": str(tmp_path / "store.zarr"),
        "generate": {
            "dijet": {"events": 3000, "signal_events": 100, "extra_background": 300, "test_events": 300, "seed": 3},
            "dqm": None,
            "l1": {"events": 1000, "signal_events": 100, "blackbox_events": 100},
        },
    })
    result = pipeline_stage(cfg, RunContext(cfg, "<test>"))
    assert set(result) == {"figures", "plots", "artefacts"}
    assert not (tmp_path / "generated" / "dqm").exists()
    fileset = json.loads((tmp_path / "generated" / "dijet" / "fileset.json").read_text())
    assert set(fileset) == {"data", "extra_bkg", "test"}
    assert result["artefacts"]["dijet_fileset"] == str((tmp_path / "generated" / "dijet" / "fileset.json").resolve())
    assert result["figures"]["dijet_extra_bkg_events"] == 300
    assert result["figures"]["dijet_data_signal"] == 100
    l1_fileset = json.loads((tmp_path / "generated" / "l1" / "fileset.json").read_text())
    assert set(l1_fileset) == {"sm", "ato4l", "lq_btau", "h0_tautau", "hch_taunu", "blackbox"}
    json.dumps(result)  # JSON-able for summary.json


def test_other_signals_generate(tmp_path):
    """Every registered signal generates; prongs/b/lepton patterns show in τ ratios, DeepB, LSF3."""
    import numpy as np

    from lhcad.generate import dijet as phys
    from lhcad.generate.common import rng_for
    from lhcad.generate.signals import SIGNALS, get_signal

    qcd = phys.make_block(rng_for(1, "qcd"), 20_000)
    q_t21 = np.median(qcd.fatjet["tau2"][:, :2] / qcd.fatjet["tau1"][:, :2])
    for name in SIGNALS:
        sig = get_signal(name)
        blk = phys.make_block(rng_for(1, "signal"), 5000, sig)
        # peak at M_A (heavy many-prong daughters are often not contained in R = 0.8: lower tail)
        if max(d.mass or 0 for d in sig.daughters) <= 0.15 * sig.mass:
            h, e = np.histogram(blk.mjj / sig.mass, np.linspace(0.5, 1.3, 81))
            assert abs(e[np.argmax(h)] + 0.005 - 1) < 0.04, name
        assert 0.7 < np.median(blk.mjj) / sig.mass < 1.02, name
        fj = blk.fatjet
        t21 = fj["tau2"][:, :2] / fj["tau1"][:, :2]
        t32 = fj["tau3"][:, :2] / fj["tau2"][:, :2]
        prongs = sorted(d.prongs for d in sig.daughters)
        if prongs[-1] == 2:
            assert np.median(t21) < q_t21 - 0.15, name
        if 3 in prongs:
            assert np.median(t32[t32 < 0.55]) < 0.5 and np.mean(t32 < 0.45) > 0.3, name
        if any(d.b for d in sig.daughters):
            assert np.mean(fj["btagDeepB"][:, :2] > 0.5) > 0.4 > np.mean(qcd.fatjet["btagDeepB"][:, :2] > 0.5), name
        if any(d.lepton_fraction for d in sig.daughters):
            lep = np.mean([d.lepton_fraction for d in sig.daughters])
            assert np.mean(fj["lsf3"][:, :2] > 0.7) > np.mean(qcd.fatjet["lsf3"][:, :2] > 0.7) + 0.5 * lep, name
    # parameters: another M_A and daughter masses
    sig = get_signal("wprime_xy", mass=2500, daughter_masses=(300, 80))
    blk = phys.make_block(rng_for(2, "signal"), 5000, sig)
    assert abs(np.median(blk.mjj) / 2500 - 1) < 0.05
    heavy = np.max(blk.fatjet["mass"][:, :2], axis=1)
    assert abs(np.median(heavy) / 300 - 1) < 0.08

"""The ``dqm`` stage of ``lhcad run``: train → score → certify (→ compare with truth when generated)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lhcad.config import ConfigError, PipelineConfig

log = logging.getLogger(__name__)


def _generated(ctx) -> Path:
    return Path(ctx.workdir) / "generated" / "dqm"


def pipeline_stage(cfg: PipelineConfig, ctx) -> dict:
    """Run the DQM procedure on ``cfg.store``; figures, plots and artefacts for summary.json.

    GOOD reference: ``dqm.reference`` / ``dqm.reference_runs``; if neither is set and the generator's
    ``truth.json`` is there, every other GOOD run of the truth ordered by pile-up (the rest stay unseen,
    to measure the false-flag rate) — stated in the figures as ``reference_source``.
    """
    from lhcad.cluster import open_cluster
    from lhcad.dqm import workflow
    from lhcad.dqm.evaluate import evaluate, read_truth, spread_reference
    from lhcad.dqm.lumi import load_lumidata

    dqm = cfg.dqm
    gen = _generated(ctx)
    truth = read_truth(gen / "truth.json") if (gen / "truth.json").is_file() else None
    source = "config"
    csv = dqm.lumi_csv or (str(gen / "lumi.csv") if (gen / "lumi.csv").is_file() else None)
    if not dqm.reference and not dqm.reference_runs:
        if truth is None or not truth.good_runs or csv is None:
            raise ConfigError(f"{ctx.config_path}: dqm.reference or dqm.reference_runs is needed "
                              f"(no generator truth/lumi.csv at {gen})")
        dqm = dqm.model_copy(update={"reference_runs": spread_reference(truth.good_runs, load_lumidata(csv))})
        source = "generator truth: every other GOOD run by pile-up"
    out = Path(ctx.workdir) / "dqm"
    with open_cluster(cfg.cluster) as cluster:
        calib = workflow.train(cfg.store, out / "models", dqm, cluster)
        workflow.score(cfg.store, out / "models", cluster)
    report = workflow.certify(cfg.store, out / "models", out, dqm, lumi_csv=csv)
    figures: dict = {"reference_source": source, "reference_runs": dqm.reference_runs,
                     "verdicts": report["verdicts"], "verdicts_per_me": report["verdicts_per_me"],
                     "n_ls": report["n_ls"], "n_ls_flagged": report["n_ls_flagged"],
                     "n_ls_low_stats": report["n_ls_low_stats"], "model": dqm.model}
    if "lumi" in report:
        figures["certified_lumi_pb"] = report["lumi"]["certified_pb"]
        figures["recovered_lumi_pb"] = report["lumi"]["recovered_pb"]
    if truth is not None:
        table = pd.read_csv(report["artefacts"]["ls_table"]).to_dict("list")
        ref_runs = next(iter(next(iter(calib["models"].values())).values()))["reference_runs"]
        ev = evaluate(table, truth, ref_runs, load_lumidata(csv) if csv else None)
        figures.update({k: ev[k] for k in ("ls_recall", "ls_recall_per_kind", "ls_false_flag_rate",
                                            "n_good_ls_tested", "ls_false_flag_rate_upper95",
                                            "true_recoverable_lumi_pb") if k in ev})
    art = dict(report["artefacts"])
    plots = art.pop("plots", [])
    art["calibration"] = str(out / "models" / workflow.CALIBRATION)
    return {"figures": figures, "plots": plots, "artefacts": art}

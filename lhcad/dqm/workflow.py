"""Train, score and certify over the store, with one Dask task per (ME, model) or (ME, model, runs).

* :func:`train` — for every ME × model: fit on the GOOD reference LSs, score the held-out GOOD LSs,
  calibrate the thresholds; writes ``OUT/models/<ME>__<model>.pt`` and ``OUT/calibration.json``.
* :func:`score` — scores every LS of every run (tasks over run chunks) and writes them into the store
  as ``lumi/<ME>/scores/<model>`` (aligned with the ME's rows; attrs hold the thresholds).
* :func:`certify` — per-ME and combined verdicts, golden JSONs, report JSON, luminosity, plots.

Reference LSs (the GOOD runs the AEs learn from) come from a golden JSON (read with
``coffea.lumi_tools.LumiMask``) and/or a list of runs. Held-out GOOD LSs for calibration: a fraction
``holdout_fraction`` of the reference runs when there are at least three — whole runs, so that the
held-out LSs differ from the training LSs as much as a new run does (an LS-level split would let the AE
learn the very conditions it is calibrated on, and the threshold would come out too low for new runs),
spread evenly over the runs ordered by their mean entries per LS (∝ luminosity ∝ pile-up, which shapes
the MEs), the same runs for every ME — else the last ``holdout_fraction`` of each run's LSs.

Thresholds (:mod:`lhcad.dqm.calibrate`): per ME a conformal threshold on its held-out scores; for the
combined verdict one joint threshold on ``max_ME score / scale`` over the held-out LSs, so that the
combined false-flag rate (an LS flagged by any ME) is calibrated directly.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lhcad.cluster import Cluster
from lhcad.config import ConfigError, DQMConfig
from lhcad.dqm import certify as _cert
from lhcad.dqm.calibrate import calibrate_combined, calibrate_threshold
from lhcad.dqm.data import LSHistograms, list_mes, low_stats_mask, read_me
from lhcad.store import StoreError, open_store

log = logging.getLogger(__name__)

CALIBRATION = "calibration.json"


# ------------------------------------------------------------------------------------------ reference
def reference_mask(h: LSHistograms, golden: str | None, runs: list[int] | None) -> np.ndarray:
    """True for the reference (known-GOOD) LSs of ``h``: in the golden JSON and/or the listed runs."""
    if not golden and not runs:
        raise ConfigError("dqm: no GOOD reference: give dqm.reference (golden JSON) or dqm.reference_runs")
    mask = np.ones(h.n_ls, bool)
    if golden:
        from coffea.lumi_tools import LumiMask

        if not Path(golden).is_file():
            raise ConfigError(f"{golden}: reference golden JSON not found")
        mask &= LumiMask(str(golden))(h.run.astype(np.uint32), h.lumi.astype(np.uint32))
    if runs:
        mask &= np.isin(h.run, np.asarray(runs, np.int64))
    if not mask.any():
        raise ConfigError(f"dqm: no LS of lumi/{h.me} is in the GOOD reference (golden={golden}, runs={runs})")
    return mask


def choose_holdout_runs(h: LSHistograms, ref: np.ndarray, holdout_fraction: float) -> list[int] | None:
    """Reference runs held out for calibration (None: fewer than 3 runs, split inside the runs).

    Runs are ordered by their mean entries per LS (luminosity, hence pile-up) and the held-out ones are
    evenly spaced in that order, so that they span the conditions of the runs the AE learns from.
    """
    runs = np.unique(h.run[ref])
    if len(runs) < 3:
        return None
    mean_entries = np.array([h.entries[ref & (h.run == r)].mean() for r in runs])
    runs = runs[np.argsort(mean_entries, kind="stable")]
    n_hold = min(len(runs) - 1, max(1, int(round(holdout_fraction * len(runs)))))
    # centre the picks in n_hold equal slices of the ordering (both ends stay in training)
    picks = np.unique(((np.arange(n_hold) + 0.5) * len(runs) / n_hold).astype(int).clip(0, len(runs) - 1))
    return sorted(int(r) for r in runs[picks])


def split_holdout(h: LSHistograms, ref: np.ndarray, holdout_fraction: float,
                  holdout_runs: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) masks over ``h``'s LSs, both inside ``ref`` (see :func:`choose_holdout_runs`)."""
    runs = np.unique(h.run[ref])
    hold = np.zeros(h.n_ls, bool)
    if holdout_runs is None and len(runs) >= 3:
        holdout_runs = choose_holdout_runs(h, ref, holdout_fraction)
    if holdout_runs is not None:
        hold = ref & np.isin(h.run, np.asarray(holdout_runs, np.int64))
    else:
        for r in runs:
            rows = np.flatnonzero(ref & (h.run == r))
            n_hold = int(round(holdout_fraction * len(rows)))
            hold[rows[len(rows) - n_hold:]] = True
    return ref & ~hold, hold


def make_model(kind: str, cfg: DQMConfig, threads: int | None = None):
    common = dict(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                  device=cfg.device, threads=threads)
    if kind == "dense":
        from lhcad.models.dqm_dense import DenseAE

        return DenseAE(hidden=cfg.dense_hidden, latent=cfg.dense_latent, **common)
    if kind == "lstm":
        from lhcad.models.dqm_lstm import LSTMAE

        return LSTMAE(window=cfg.lstm_window, hidden=cfg.lstm_hidden, latent=cfg.lstm_latent, **common)
    raise ConfigError(f"dqm.models: unknown model {kind!r} (allowed: dense, lstm)")


def resolve_mes(store: str, cfg: DQMConfig) -> list[str]:
    have = list_mes(store)
    if not cfg.monitor_elements:
        if not have:
            raise StoreError(f"{store}: lumi/ has no monitor elements")
        return have
    missing = [m for m in cfg.monitor_elements if m not in have]
    if missing:
        raise ConfigError(f"dqm.monitor_elements: {', '.join(missing)} not in {store}/lumi (have: {', '.join(have)})")
    return list(cfg.monitor_elements)


# ------------------------------------------------------------------------------------------ tasks
@dataclass
class TrainTask:
    store: str
    me: str
    kind: str
    cfg: dict  # DQMConfig as a dict (plain data for Dask)
    n_me: int
    out: str
    holdout_runs: list[int] | None = None  # the same for every ME (None: split inside the runs)


def train_task(t: TrainTask) -> dict:
    """Fit one AE on one ME's reference LSs; calibrate its thresholds on the held-out GOOD LSs."""
    cfg = DQMConfig.model_validate(t.cfg)
    h = read_me(t.store, t.me)
    ref = reference_mask(h, cfg.reference, cfg.reference_runs)
    train_m, hold_m = split_holdout(h, ref, cfg.holdout_fraction, t.holdout_runs)
    ok = ~low_stats_mask(h.entries, cfg.min_entries)
    X, N = h.fractions, h.entries
    model = make_model(t.kind, cfg, threads=1)  # one thread per task: tasks run in parallel
    if t.kind == "dense":
        sel = train_m & ok
        model.fit(X[sel], N[sel], h.run[sel])
        hold_scores = model.score_samples(X[hold_m & ok], N[hold_m & ok])
    else:  # sequences: keep every LS of the run in order (low-stats ones weigh ~0 in the loss)
        model.fit(X[train_m], N[train_m], h.run[train_m])
        hold_scores = model.score_samples(X[hold_m], N[hold_m], h.run[hold_m])[ok[hold_m]]
    path = model.save(Path(t.out) / "models" / f"{t.me}__{t.kind}.pt")
    thr = calibrate_threshold(hold_scores, cfg.false_flag_rate, confidence=cfg.threshold_confidence)
    hold_keys = h.run[hold_m & ok] * (1 << 32) + h.lumi[hold_m & ok]
    return {
        "me": t.me, "model": t.kind, "path": str(path),
        "threshold": thr.to_dict(), "hold_keys": hold_keys, "hold_scores": np.asarray(hold_scores, float),
        "n_train": int((train_m & ok).sum()), "n_holdout": int((hold_m & ok).sum()),
        "train_runs": sorted(int(r) for r in np.unique(h.run[train_m])),
        "holdout_runs": sorted(int(r) for r in np.unique(h.run[hold_m])),
        "reference_runs": sorted(int(r) for r in np.unique(h.run[ref])),
        "reference": str(_save_reference(Path(t.out) / "models" / f"{t.me}__{t.kind}__reference.npz", h, ref & ok)),
        "holdout_score_median": float(np.median(hold_scores)),
        "final_val_loss": float(model.history_[-1]) if model.history_ else None,
    }


def _save_reference(path: Path, h: LSHistograms, mask: np.ndarray) -> Path:
    """The GOOD reference LSs' counts (for the run-level test), next to the model."""
    np.savez_compressed(path, counts=h.counts[mask], run=h.run[mask], lumi=h.lumi[mask])
    return path


@dataclass
class ScoreTask:
    store: str
    me: str
    kind: str
    model_path: str
    runs: list[int]


def score_task(t: ScoreTask) -> dict:
    """Score every LS of ``runs`` for one ME with one saved AE; returns store rows and scores."""
    import torch

    from lhcad.dqm.score import mse
    from lhcad.models.dqm_base import load_model

    torch.set_num_threads(1)
    h = read_me(t.store, t.me, runs=t.runs)
    model = load_model(t.model_path)
    X = h.fractions
    recon = model.reconstruct(X, h.run)
    from lhcad.dqm.score import poisson_chi2

    return {"rows": h.rows, "score": poisson_chi2(X, recon, h.entries), "mse": mse(X, recon)}


# ------------------------------------------------------------------------------------------ stages
def train(store: str, out: str | Path, cfg: DQMConfig, cluster: Cluster) -> dict:
    """Train every ME × model as Dask tasks; writes the models and ``OUT/calibration.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mes = resolve_mes(store, cfg)
    h0 = read_me(store, mes[0])
    hold_runs = choose_holdout_runs(h0, reference_mask(h0, cfg.reference, cfg.reference_runs), cfg.holdout_fraction)
    tasks = [TrainTask(store, me, kind, cfg.model_dump(), len(mes), str(out), hold_runs)
             for me in mes for kind in cfg.models]
    results = cluster.map(train_task, tasks, desc="dqm train", key_prefix="dqm-train")
    calib = {"store": store, "false_flag_rate": cfg.false_flag_rate, "monitor_elements": mes,
             "models": {}, "combined": {}, "config": cfg.model_dump()}
    for r in results:
        calib["models"].setdefault(r["model"], {})[r["me"]] = r
    for kind, per_me in calib["models"].items():
        calib["combined"][kind] = _calibrate_combined(per_me, cfg, out / "models" / f"holdout_scores__{kind}.npz")
    (out / CALIBRATION).write_text(json.dumps(calib, indent=1))
    return calib


def _calibrate_combined(per_me: dict, cfg: DQMConfig, path: Path) -> dict:
    """Joint threshold over the MEs (:func:`lhcad.dqm.calibrate.calibrate_combined`) on the held-out LSs.

    Sets every ME's ``threshold_combined`` (joint threshold × the ME's scale); moves the held-out
    scores out of ``per_me`` into ``path`` (an LS × ME matrix, NaN where an ME has no score).
    """
    mes = list(per_me)
    held = {me: (per_me[me].pop("hold_keys"), per_me[me].pop("hold_scores")) for me in mes}
    keys = np.unique(np.concatenate([k for k, _ in held.values()]))
    matrix = np.full((len(keys), len(mes)), np.nan)
    for j, me in enumerate(mes):
        k, sc = held[me]
        matrix[np.searchsorted(keys, k), j] = sc
    thr, scale = calibrate_combined(matrix, cfg.false_flag_rate, confidence=cfg.threshold_confidence)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, keys=keys, scores=matrix, mes=np.asarray(mes))
    for j, me in enumerate(mes):
        per_me[me]["threshold_combined"] = {**thr.to_dict(), "threshold": float(thr.threshold * scale[j]),
                                            "scale": float(scale[j]), "joint_threshold": thr.threshold}
    return {**thr.to_dict(), "scales": dict(zip(mes, scale.tolist())), "holdout_scores": str(path)}


def load_calibration(models_dir: str | Path) -> dict:
    path = Path(models_dir) / CALIBRATION
    if not path.is_file():
        raise ConfigError(f"{path}: not found — run `lhcad dqm train` first")
    return json.loads(path.read_text())


def score(store: str, models_dir: str | Path, cluster: Cluster, runs_per_task: int = 8) -> dict:
    """Score every LS with every trained model; writes ``lumi/<ME>/scores/<model>`` into the store."""
    calib = load_calibration(models_dir)
    root = open_store(store, mode="r")
    tasks = []
    for kind, per_me in calib["models"].items():
        for me, info in per_me.items():
            runs = np.unique(np.asarray(root["lumi"][me]["run"][...]))
            for i in range(0, len(runs), runs_per_task):
                tasks.append(ScoreTask(store, me, kind, info["path"], runs[i:i + runs_per_task].tolist()))
    results = cluster.map(score_task, tasks, desc="dqm score", key_prefix="dqm-score")
    root = open_store(store, mode="a")
    written = {}
    for kind, per_me in calib["models"].items():
        for me, info in per_me.items():
            n = root["lumi"][me]["run"].shape[0]
            sc, ms = np.full(n, np.nan), np.full(n, np.nan)
            for t, r in zip(tasks, results):
                if t.kind == kind and t.me == me:
                    sc[r["rows"]], ms[r["rows"]] = r["score"], r["mse"]
            grp = root["lumi"][me].require_group("scores")
            arr = grp.create_array(kind, data=sc, overwrite=True)
            arr.attrs.update({"threshold": info["threshold"]["threshold"],
                              "threshold_combined": info["threshold_combined"]["threshold"],
                              "false_flag_rate": calib["false_flag_rate"], "model_path": info["path"],
                              "score": "poisson_chi2_per_bin"})
            grp.create_array(f"{kind}__mse", data=ms, overwrite=True)
            written[f"{me}/{kind}"] = int(np.isfinite(sc).sum())
    return written


def pileup_lookup(lumidata):
    """(run, LS) → average pile-up from a brilcalc CSV (``LumiData`` keeps run, LS, recorded, avgpu)."""
    d = lumidata._lumidata
    table = {(int(r), int(ls)): float(pu) for r, ls, pu in zip(d[:, 0], d[:, 1], d[:, 3])}

    def lookup(run: np.ndarray, lumi: np.ndarray) -> np.ndarray | None:
        vals = [table.get((int(r), int(ls))) for r, ls in zip(run, lumi)]
        return None if any(v is None for v in vals) else np.asarray(vals, float)

    return lookup


def me_scores(store: str, calib: dict, kind: str, pileup=None) -> list[_cert.MEScores]:
    """The stored scores of one model for every ME, as :class:`lhcad.dqm.certify.MEScores`.

    ``pileup`` (from :func:`pileup_lookup`) gives the conditions the run-level test matches on; an LS
    missing from the CSV makes the test fall back to matching entries (logged).
    """
    root = open_store(store, mode="r")
    out = []
    if kind not in calib["models"]:
        raise ConfigError(f"dqm.model: {kind!r} was not trained (have: {', '.join(calib['models'])})")
    for me, info in calib["models"][kind].items():
        h = read_me(root, me)
        try:
            sc = np.asarray(root["lumi"][me]["scores"][kind][...])[h.rows]
        except KeyError:
            raise StoreError(f"{store}: lumi/{me}/scores/{kind} not found — run `lhcad dqm score` first") from None
        ref = np.load(info["reference"])
        cond = ref_cond = None
        if pileup is not None:
            cond, ref_cond = pileup(h.run, h.lumi), pileup(ref["run"], ref["lumi"])
            if cond is None or ref_cond is None:
                log.warning("lumi/%s: LSs missing from the lumi CSV: run test matches entries, not pile-up", me)
                cond = ref_cond = None
        out.append(_cert.MEScores(me, h.run, h.lumi, h.counts, sc, info["threshold"]["threshold"],
                                  info["threshold_combined"]["threshold"], ref["counts"], cond, ref_cond))
    return out


def certify(store: str, models_dir: str | Path, out: str | Path, cfg: DQMConfig,
            lumi_csv: str | None = None, max_plots: int | None = None) -> dict:
    """Per-ME and combined verdicts with ``cfg.model``'s scores; writes golden JSONs, report, plots.

    Outputs under ``out``: ``certification.json`` (combined golden JSON), ``certification_<ME>.json``,
    ``dqm_report.json`` (per run: combined and per-ME verdicts, flagged and low-stats LSs, run tests;
    luminosity), ``ls_table.csv`` (every LS: scores, entries, flags, certified), ``plots/``.
    """
    import pandas as pd

    from lhcad.dqm.lumi import load_lumidata, lumi_of, missing_from_csv, recovered_lumi

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calib = load_calibration(models_dir)
    opts = _cert.CertifyOptions(cfg.min_entries, cfg.low_stats, cfg.run_test_alpha, cfg.run_test_syst,
                                cfg.max_flagged_fraction, cfg.run_test)
    csv = lumi_csv or cfg.lumi_csv
    pileup = pileup_lookup(load_lumidata(csv)) if csv else None
    scores = me_scores(store, calib, cfg.model, pileup)
    per_me = {s.me: _cert.certify_me(s, opts) for s in scores}
    combined, table = _cert.certify_combined(scores, opts)
    golden = _cert.to_golden({r: v.certified for r, v in combined.items()})
    paths = {"certification": str(_cert.write_golden(golden, out / "certification.json"))}
    for me, verdicts in per_me.items():
        g = _cert.to_golden({r: v.certified for r, v in verdicts.items()})
        paths[f"certification_{me}"] = str(_cert.write_golden(g, out / f"certification_{me}.json"))
    pd.DataFrame({k: v for k, v in table.items()}).to_csv(out / "ls_table.csv", index=False)
    paths["ls_table"] = str(out / "ls_table.csv")

    # comparison: every other trained model's LS flags (per ME, at the per-ME threshold)
    comparison = {}
    for kind in calib["models"]:
        try:
            other = me_scores(store, calib, kind)
        except StoreError:
            continue
        comparison[kind] = {s.me: int((s.score >= s.threshold).sum()) for s in other}

    report: dict = {
        "model": cfg.model, "false_flag_rate": cfg.false_flag_rate,
        "monitor_elements": [s.me for s in scores], "low_stats_policy": cfg.low_stats,
        "run_test": {"kind": f"{cfg.run_test} vs conditions-matched GOOD reference (k=20 nearest in "
                     + ("avgpu from the lumi CSV" if pileup else "entries") + ")", "alpha": cfg.run_test_alpha,
                     "syst": cfg.run_test_syst, "combined_alpha": cfg.run_test_alpha / len(scores)},
        "verdicts": _cert.verdict_counts(combined),
        "verdicts_per_me": {me: _cert.verdict_counts(v) for me, v in per_me.items()},
        "n_ls": int(len(table["run"])), "n_ls_flagged": int(table["flagged"].sum()),
        "n_ls_low_stats": int(table["low_stats"].sum()), "n_ls_certified": int(table["certified"].sum()),
        "flags_per_model": comparison,
        "runs": {str(r): {"combined": v.to_dict(), "per_me": {me: per_me[me][r].to_dict() for me in per_me}}
                 for r, v in combined.items()},
    }
    if csv:
        data = load_lumidata(csv)
        run, lumi = table["run"], table["lumi"]
        recovered_runs = [r for r, v in combined.items() if v.verdict == "RECOVERED"]
        rec_rows = np.isin(run, recovered_runs)
        report["lumi"] = {
            "csv": str(csv),
            "delivered_to_dqm_pb": lumi_of(data, run, lumi),
            "certified_pb": lumi_of(data, run[table["certified"]], lumi[table["certified"]]),
            "recovered_pb": recovered_lumi(out / "certification.json", csv, recovered_runs),
            "flagged_pb": lumi_of(data, run[table["flagged"]], lumi[table["flagged"]]),
            "low_stats_pb": lumi_of(data, run[table["low_stats"]], lumi[table["low_stats"]]),
            "recovered_runs_total_pb": lumi_of(data, run[rec_rows], lumi[rec_rows]),
            "ls_missing_from_csv": missing_from_csv(data, run, lumi),
        }
    paths["plots"] = _plots(store, scores, combined, out / "plots", calib, cfg, max_plots)
    report["artefacts"] = paths
    (out / "dqm_report.json").write_text(json.dumps(report, indent=1))
    paths["report"] = str(out / "dqm_report.json")
    return report


def _plots(store, scores: list[_cert.MEScores], combined: dict, outdir: Path, calib: dict,
           cfg: DQMConfig, max_plots: int | None) -> list[str]:
    """Score vs LS for the runs with flags (then the others), input vs reconstruction of the worst LS."""
    from lhcad.dqm import plots
    from lhcad.models.dqm_base import load_model

    runs = sorted(combined, key=lambda r: (combined[r].verdict == "GOOD", r))
    runs = runs[: (cfg.max_plots if max_plots is None else max_plots)]
    paths = []
    for r in runs:
        per = {}
        worst = None
        for s in scores:
            rows = np.flatnonzero(s.run == r)
            per[s.me] = (s.lumi[rows], s.score[rows], s.threshold)
            i = rows[np.nanargmax(s.score[rows] / s.threshold)]
            if worst is None or s.score[i] / s.threshold > worst[0]:
                worst = (s.score[i] / s.threshold, s, i)
        paths.append(str(plots.score_vs_ls(r, per, combined[r].verdict, outdir / f"score_vs_ls_{r}.png")))
        _, s, i = worst
        h = read_me(store, s.me, runs=[r])
        j = int(np.flatnonzero(h.lumi == s.lumi[i])[0])
        model = load_model(calib["models"][cfg.model][s.me]["path"])
        recon = model.reconstruct(h.fractions, h.run)[j]
        paths.append(str(plots.input_vs_reconstruction(
            s.me, h.axes, h.shape, h.counts[j], recon, r, int(s.lumi[i]), float(s.score[i]),
            outdir / f"worst_ls_{r}_{s.me}.png")))
    return paths

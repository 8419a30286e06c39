"""Training and scoring as independent Dask tasks: windows × methods × folds × ensemble members.

Every piece of work is one task (a small picklable dict) run by :meth:`lhcad.cluster.Cluster.map`
with retries; a task that still fails raises, nothing is dropped. Each task reads its inputs from the
Zarr store, sets torch's thread count to its worker's threads, and writes its artefact atomically
under ``<artefacts>/<lo>_<hi>/``:

=====================================  ================================================================
``flow-<hash>/m<k>.pt``                background flow p(x | m) trained on the sidebands (shared by
                                       ANODE, CATHODE and R-ANODE; ``n_flows`` of them)
``<method>-<hash>/f<i>_m<k>.pt``       the estimator of fold i, ensemble member k (+ ``.json`` metrics)
``<method>-<hash>/f<i>_m<k>.npy``      its scores for the candidate rows of fold i (:func:`task_rows`)
``<method>-<hash>/summary.json``       combined metrics after scoring
=====================================  ================================================================

``<hash>`` fingerprints the settings and the store size, so a rerun with the same settings reuses
finished artefacts and a changed setting trains afresh.

k-fold: rows get a fold number from the seed; the model of fold i never trains on fold-i rows. Every
row is scored by the members of its own fold (:func:`combine`), so rows a model trained on are scored
out-of-fold and all rows share one score definition. A fold's members score only that fold's rows
(scoring every row with every fold model cost k times the work for scores nobody used).

Methods with their own inputs (:func:`method_features`) read their own feature view of the store
(:func:`method_spec`): ``cathode_b`` the LHCO features + DeepB of both jets (its own background
flow), ``vaeqr`` / ``tagntrain`` the per-jet variables of both jets, ``quak`` its per-jet set.
``vaeqr`` trains on data (VAE on the |Δη| sideband when the store has one, the m_jj quantile
regression on the rest), ``tagntrain`` on SR data, ``quak`` on simulation datasets only
(``quak_background`` and the ``mc_*`` signal prior).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from lhcad.models.data import DataError, DijetData, load_dijet

log = logging.getLogger(__name__)

METHODS = ("supervised", "iad", "cwola", "anode", "cathode", "ranode", "cathode_b", "vaeqr", "tagntrain", "quak")
FLOW_METHODS = ("anode", "cathode", "ranode", "cathode_b")
CLASSIFIER_METHODS = ("supervised", "iad", "cwola", "cathode", "cathode_b", "tagntrain")
MIN_DETA_SIDEBAND = 1000      # fewer |Δη| sideband events: vaeqr's VAE trains on all (folded) data


@functools.cache
def method_features() -> dict[str, tuple[str, ...]]:
    """Methods whose inputs are fixed (not ``train.features``) → their feature view.

    Built on first use: importing the estimators (torch, zuko) costs seconds, which every CLI call
    that merely imports this module would otherwise pay.
    """
    from lhcad.models.cathode_b import CATHODE_B_FEATURES
    from lhcad.models.quak import QUAK_FEATURES
    from lhcad.models.vaeqr import per_jet_columns

    return {"cathode_b": CATHODE_B_FEATURES, "vaeqr": per_jet_columns(), "tagntrain": per_jet_columns(),
            "quak": QUAK_FEATURES}


def method_spec(spec: dict, method: str) -> dict:
    """The job description ``method`` runs with: its own feature view where it has one."""
    if method not in method_features():
        return spec
    return {**spec, "cfg": {**spec["cfg"], "features": list(method_features()[method])}}


# ------------------------------------------------------------------------------------------ helpers
def window_key(sr) -> str:
    lo, hi = sr
    return f"{lo:g}_{hi:g}"


def score_key(method: str, sr) -> str:
    """The store key of a method's scores in a window, e.g. ``cathode__3300_3700``."""
    return f"{method}__{window_key(sr)}"


def _fingerprint(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _flow_settings(cfg: dict) -> dict:
    keys = ("features", "resonant", "flow", "flow_transforms", "flow_hidden", "flow_epochs",
            "flow_max_events", "flow_sb_width", "flow_batch_size", "seed")
    return {k: cfg[k] for k in keys}


def _method_settings(method: str, cfg: dict) -> dict:
    keys = ["features", "resonant", "folds", "seed", "sb_width"]
    if method in CLASSIFIER_METHODS:
        keys += ["classifier", "hgb_max_iter", "mlp_epochs", "batch_size"]
    if method in ("cathode", "cathode_b"):
        keys += ["oversample"]
    if method in ("vaeqr", "tagntrain"):
        keys += ["vae_epochs", "batch_size"]
    if method == "vaeqr":
        keys += ["delta_eta_sideband"]
    if method == "quak":
        keys += ["quak_background", "quak_signal_prior", "quak_signal_weight", "flow", "flow_transforms",
                 "flow_hidden", "flow_epochs", "flow_batch_size", "flow_max_events"]
    if method == "ranode":
        keys += ["ranode_epochs", "ranode_w_init", "ranode_fraction_update", "flow_batch_size"]
    out = {k: cfg[k] for k in keys}
    if method in CLASSIFIER_METHODS and cfg["classifier"] == "hgb":
        out["hgb_l2_regularization"] = HGB_L2
    if method in FLOW_METHODS:
        out["flow"] = _flow_settings(cfg)
        out["n_flows"] = cfg["n_flows"]
    return out


def flow_dir(spec: dict, sr) -> Path:
    return Path(spec["artefacts"]) / window_key(sr) / f"flow-{_fingerprint([_flow_settings(spec['cfg']), spec['n_rows']])}"


def method_dir(spec: dict, method: str, sr) -> Path:
    spec = method_spec(spec, method)
    fp = _fingerprint([_method_settings(method, spec["cfg"]), spec["n_rows"]])
    return Path(spec["artefacts"]) / window_key(sr) / f"{method}-{fp}"


def _set_threads(spec: dict) -> int:
    """torch (and OpenMP, for scikit-learn) threads = the Dask worker's threads; outside a Dask
    worker (iterative / futures back-ends) the configured ``threads_per_worker``."""
    import torch
    from threadpoolctl import threadpool_limits

    from lhcad.cluster import torch_threads_for_worker

    try:
        from distributed import get_worker

        get_worker()
        n = torch_threads_for_worker()
    except (ImportError, ValueError):
        n = int(spec.get("threads", 1))
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    return n


@functools.lru_cache(maxsize=6)
def _data(store: str, features: tuple, resonant: str, n_rows: int) -> DijetData:
    return load_dijet(store, features, resonant)


def task_data(spec: dict) -> DijetData:
    cfg = spec["cfg"]
    return _data(spec["store"], tuple(cfg["features"]), cfg["resonant"], spec["n_rows"])


def folds_of(n: int, folds: int, seed: int) -> np.ndarray:
    """The fold number of every row (deterministic in ``seed``)."""
    return np.random.default_rng(seed).integers(0, folds, n)


def region_masks(d: DijetData, sr, sb_width):
    from lhcad.models.cwola import sideband_masks

    in_sr, in_sb = sideband_masks(d.m, sr, sb_width)
    return in_sr & d.finite, in_sb & d.finite


def candidates(d: DijetData, sr, cfg: dict) -> np.ndarray:
    """Rows every model of a window scores: every row with finite features (``score_range: all``,
    so the stats stage can fit the selected m_jj spectrum over its whole range) or just the SR and
    the CWoLa sidebands (``score_range: window``)."""
    if cfg.get("score_range", "all") == "all":
        return d.finite.copy()
    in_sr, in_sb = region_masks(d, sr, cfg["sb_width"])
    return in_sr | in_sb


def task_rows(d: DijetData, sr, cfg: dict, fold: int) -> np.ndarray:
    """Indices of the rows the members of ``fold`` score: the candidates that fall in that fold."""
    return np.flatnonzero(candidates(d, sr, cfg) & (folds_of(d.n, cfg["folds"], cfg["seed"]) == fold))


def training_pool(d: DijetData, method: str, sr, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """(class-1 rows, class-0 rows) a method trains on in window ``sr`` (before the fold split).

    For the density methods class 1 is the SR data the SR/signal model is fitted to; class 0 is empty.
    """
    in_sr, in_sb = region_masks(d, sr, cfg["sb_width"])
    none = np.zeros(d.n, bool)
    if method == "supervised":
        test = d.rows("test", required=False)
        if not (test & in_sr).any():
            raise DataError(f"{d.store}: supervised needs a labelled 'test' dataset with events in the SR {sr}")
        rows = test & in_sr & (d.truth >= 0)
        pos, neg = rows & (d.truth > 0), rows & (d.truth == 0)
    elif method == "iad":
        pos, neg = d.rows("data") & in_sr, d.rows("extra_bkg") & in_sr
    elif method == "cwola":
        pos, neg = d.rows("data") & in_sr, d.rows("data") & in_sb
    elif method in FLOW_METHODS or method == "tagntrain":
        pos, neg = d.rows("data") & in_sr, none
    elif method == "vaeqr":
        pos, neg = d.rows("data"), none
    elif method == "quak":
        bkg, prior = quak_datasets(d, cfg)
        pos = np.any([d.rows(p) & in_sr for p in prior], axis=0)
        neg = d.rows(bkg) & in_sr
        if not neg.any():
            raise DataError(f"{d.store}: quak has no {bkg!r} (background simulation) events in window {sr}")
    else:
        raise DataError(f"method {method!r} unknown (choose from {', '.join(METHODS)})")
    if not pos.any() or (method in ("supervised", "iad", "cwola", "quak") and not neg.any()):
        raise DataError(f"{d.store}: {method} has no training events in window {sr} "
                        f"({int(pos.sum())} class-1, {int(neg.sum())} class-0 rows)")
    return pos, neg


def quak_datasets(d: DijetData, cfg: dict) -> tuple[str, list[str]]:
    """(background-simulation dataset, signal-prior datasets) of QUAK; DataError naming what is missing."""
    bkg = cfg["quak_background"]
    if bkg not in d.datasets:
        raise DataError(f"{d.store}: quak needs background simulation: dijet dataset {bkg!r} not in the store "
                        f"(have: {', '.join(d.datasets) or 'none'}; set train.quak_background)")
    prior = list(cfg["quak_signal_prior"]) or [n for n in d.datasets if n.startswith("mc_") and n != bkg]
    if not prior:
        raise DataError(f"{d.store}: quak needs signal simulation for its prior: no 'mc_*' dataset besides "
                        f"{bkg!r} (have: {', '.join(d.datasets)}; set train.quak_signal_prior)")
    for p in prior:
        d.rows(p)                    # DataError naming an unknown dataset
    return bkg, prior


def delta_eta(spec: dict) -> np.ndarray:
    """|Δη| of every row (vaeqr's sideband selection)."""
    cfg = spec["cfg"]
    return np.abs(_data(spec["store"], ("delta_eta",), cfg["resonant"], spec["n_rows"]).X[:, 0])


# L2 penalty on the HGB leaf values. Without it (scikit-learn's default 0) a nearly separable problem
# (supervised W' vs QCD) grows leaves with a tiny hessian sum into huge values: 32 of 800 k test
# background events (a thin τ21_j2 slice at small Δm) scored p = 1.0 above every signal event, and
# the supervised max SIC fell from 197 to 128 (>= 20 background events rule).
HGB_L2 = 1.0


def classifier_params(cfg: dict, seed: int) -> dict:
    if cfg["classifier"] == "hgb":
        return {"n_members": 1, "max_iter": cfg["hgb_max_iter"], "l2_regularization": HGB_L2,
                "random_state": seed}
    return {"n_members": 1, "epochs": cfg["mlp_epochs"], "batch_size": cfg["batch_size"],
            "device": cfg["device"], "random_state": seed}


def flow_params(cfg: dict, seed: int) -> dict:
    return {"flow": cfg["flow"], "transforms": cfg["flow_transforms"], "hidden": tuple(cfg["flow_hidden"]),
            "epochs": cfg["flow_epochs"], "batch_size": cfg["flow_batch_size"], "device": cfg["device"],
            "random_state": seed}


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ tasks
def train_flow_task(task: dict) -> dict:
    """Train (or reuse) background flow ``task['member']`` of window ``task['sr']`` on sideband data."""
    from lhcad.models.flows import ConditionalFlow

    spec, sr, k = task["spec"], tuple(task["sr"]), task["member"]
    path = flow_dir(spec, sr) / f"m{k}.pt"
    if path.exists():
        return {"path": str(path), "reused": True, "wall_s": 0.0}
    t0 = time.perf_counter()
    threads = _set_threads(spec)
    cfg = spec["cfg"]
    d = task_data(spec)
    in_sr, _ = region_masks(d, sr, None)
    _, in_sb = region_masks(d, sr, cfg["flow_sb_width"])
    rows = np.flatnonzero(d.rows("data") & in_sb)
    if len(rows) < 100:
        raise DataError(f"{d.store}: only {len(rows)} sideband data events around {sr} for the background flow")
    seed = cfg["seed"] + 1000 * k
    if cfg["flow_max_events"] and len(rows) > cfg["flow_max_events"]:
        rows = np.sort(np.random.default_rng(seed).choice(rows, cfg["flow_max_events"], replace=False))
    flow = ConditionalFlow(**flow_params(cfg, seed)).fit(d.X[rows], d.m[rows], bounds=d.bounds())
    flow.save(path)
    wall = time.perf_counter() - t0
    _write_json(path.with_suffix(".json"), {"n_train": len(rows), "val_loss": min(flow.history_),
                                            "history": flow.history_, "wall_s": wall, "threads": threads})
    return {"path": str(path), "reused": False, "wall_s": wall}


def _load_flow(spec: dict, sr, member: int):
    from lhcad.models.flows import ConditionalFlow

    path = flow_dir(spec, sr) / f"m{member % spec['cfg']['n_flows']}.pt"
    return ConditionalFlow.load(path)


def fit_task(task: dict) -> dict:
    """Fit (or reuse) the estimator of one method × window × fold × member."""
    spec, sr, method = task["spec"], tuple(task["sr"]), task["method"]
    fold, k = task["fold"], task["member"]
    path = method_dir(spec, method, sr) / f"f{fold}_m{k}.pt"
    if path.exists():
        return {"path": str(path), "reused": True, "wall_s": 0.0}
    t0 = time.perf_counter()
    threads = _set_threads(spec)
    cfg = spec["cfg"]
    d = task_data(spec)
    pos, neg = training_pool(d, method, sr, cfg)
    fid = folds_of(d.n, cfg["folds"], cfg["seed"])
    train1, train0 = pos & (fid != fold), neg & (fid != fold)
    seed = cfg["seed"] + 100 * k + fold
    info: dict = {"n_train": [int(train1.sum()), int(train0.sum())], "threads": threads}
    if method in ("supervised", "iad", "cwola"):
        from lhcad.models.cwola import CWoLa
        from lhcad.models.idealized import IdealizedAD, Supervised

        cls = {"supervised": Supervised, "iad": IdealizedAD, "cwola": CWoLa}[method]
        est = cls(cfg["classifier"], classifier_params(cfg, seed)).fit(d.X[train1], d.X[train0])
    elif method in ("cathode", "cathode_b"):
        from lhcad.models.cathode import CATHODE

        est = CATHODE(cfg["classifier"], classifier_params(cfg, seed), oversample=cfg["oversample"],
                      random_state=seed)
        # the template is an equal mixture of all n_flows background flows (a flow ensemble)
        flows = [_load_flow(spec, sr, j) for j in range(cfg["n_flows"])]
        est.fit(d.X[train1], d.m[train1], background_flow=flows)
        held = pos & (fid == fold)
        if held.sum() >= 10:
            info["template_auc"] = est.template_auc(d.X[held], random_state=seed + 77)
    elif method == "anode":
        from lhcad.models.anode import ANODE

        est = ANODE(flow_params(cfg, seed)).fit(d.X[train1], d.m[train1], background_flow=_load_flow(spec, sr, k),
                                                bounds=d.bounds())
    elif method == "ranode":
        from lhcad.models.ranode import RANODE

        est = RANODE(flow=cfg["flow"], epochs=cfg["ranode_epochs"], batch_size=cfg["flow_batch_size"],
                     w_init=cfg["ranode_w_init"], fraction_update=cfg["ranode_fraction_update"],
                     device=cfg["device"], random_state=seed)
        est.fit(d.X[train1], d.m[train1], background_flow=_load_flow(spec, sr, k))
        info["signal_fraction"] = est.signal_fraction_
        info["signal_fraction_history"] = est.fraction_history_
        info["signal_fraction_true"] = float(np.mean(d.truth[train1] > 0)) if (d.truth[train1] >= 0).all() else None
    elif method == "vaeqr":
        from lhcad.models.vaeqr import VAEQR

        sideband = delta_eta(spec) > cfg["delta_eta_sideband"]
        if (sideband & train1).sum() < MIN_DETA_SIDEBAND:
            sideband = np.ones(d.n, bool)          # no Δη sideband in the store: VAE on all data
            info["vae_trained_on"] = "all data (no |Δη| sideband in the store)"
        else:
            info["vae_trained_on"] = f"|Δη| > {cfg['delta_eta_sideband']:g}"
        vae = {"epochs": cfg["vae_epochs"], "batch_size": cfg["batch_size"], "device": cfg["device"]}
        qr = train1 & ~sideband if (train1 & ~sideband).sum() >= 100 else train1
        est = VAEQR(vae_params=vae, random_state=seed).fit(d.X[train1], d.m[train1], sideband=sideband[train1],
                                                           qr_rows=qr[train1])
    elif method == "tagntrain":
        from lhcad.models.tagntrain import TagNTrain

        ae = {"epochs": cfg["vae_epochs"], "batch_size": cfg["batch_size"], "device": cfg["device"]}
        est = TagNTrain(ae_params=ae, classifier=cfg["classifier"], classifier_params=classifier_params(cfg, seed),
                        random_state=seed).fit(d.X[train1])
    elif method == "quak":
        from lhcad.models.quak import QUAK, balanced_mixture

        bkg, prior = quak_datasets(d, cfg)
        in_sr, _ = region_masks(d, sr, None)
        parts = [(d.X[r], d.m[r]) for r in (d.rows(p) & in_sr & (fid != fold) for p in prior) if r.any()]
        Xs, ms = balanced_mixture(parts, random_state=seed)
        brows = np.flatnonzero(train0)
        if cfg["flow_max_events"] and len(brows) > cfg["flow_max_events"]:
            brows = np.sort(np.random.default_rng(seed).choice(brows, cfg["flow_max_events"], replace=False))
        est = QUAK(flow_params(cfg, seed), signal_weight=cfg["quak_signal_weight"], random_state=seed)
        est.fit(d.X[brows], d.m[brows], Xs, ms, bounds=d.bounds())
        info["prior"] = prior
    else:
        raise DataError(f"method {method!r} unknown (choose from {', '.join(METHODS)})")
    est.save(path)
    info["wall_s"] = time.perf_counter() - t0
    _write_json(path.with_suffix(".json"), info)
    return {"path": str(path), "reused": False, "wall_s": info["wall_s"]}


_ESTIMATORS = {
    "supervised": "lhcad.models.idealized:Supervised", "iad": "lhcad.models.idealized:IdealizedAD",
    "cwola": "lhcad.models.cwola:CWoLa", "cathode": "lhcad.models.cathode:CATHODE",
    "anode": "lhcad.models.anode:ANODE", "ranode": "lhcad.models.ranode:RANODE",
    "cathode_b": "lhcad.models.cathode:CATHODE", "vaeqr": "lhcad.models.vaeqr:VAEQR",
    "tagntrain": "lhcad.models.tagntrain:TagNTrain", "quak": "lhcad.models.quak:QUAK",
}


def estimator_class(method: str):
    import importlib

    module, name = _ESTIMATORS[method].split(":")
    return getattr(importlib.import_module(module), name)


def score_task(task: dict) -> dict:
    """Score the candidate rows of the task's fold with its fitted estimator (reused when its scores
    are newer than the model and cover those rows)."""
    spec, sr, method = task["spec"], tuple(task["sr"]), task["method"]
    base = method_dir(spec, method, sr) / f"f{task['fold']}_m{task['member']}"
    model, out = base.with_suffix(".pt"), base.with_suffix(".npy")
    if not model.exists():
        raise FileNotFoundError(f"{model}: no trained model (run `lhcad train {method}` first)")
    d = task_data(spec)
    rows = task_rows(d, sr, spec["cfg"], task["fold"])
    if (out.exists() and out.stat().st_mtime >= model.stat().st_mtime
            and np.load(out, mmap_mode="r").shape == (len(rows),)):
        return {"path": str(out), "reused": True, "wall_s": 0.0}
    t0 = time.perf_counter()
    _set_threads(spec)
    est = estimator_class(method).load(model)
    s = np.asarray(est.score_samples(d.X[rows], d.m[rows]), dtype=np.float32)
    np.save(out.with_name(f".{out.name}.{os.getpid()}.npy"), s)
    os.replace(out.with_name(f".{out.name}.{os.getpid()}.npy"), out)
    return {"path": str(out), "reused": False, "wall_s": time.perf_counter() - t0}


# ------------------------------------------------------------------------------------------ drivers
def make_spec(store: str, cfg, artefacts: str | Path, threads: int = 1) -> dict:
    """The picklable job description shared by every task (store path, settings, artefact root,
    threads per task outside Dask workers)."""
    from lhcad import store as _store

    cfg = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
    return {"store": str(store), "cfg": cfg, "artefacts": str(Path(artefacts).resolve()),
            "n_rows": _store.n_rows(str(store), "dijet"), "threads": int(threads)}


def windows(cfg: dict) -> list[tuple[float, float]]:
    return [tuple(w) for w in (cfg.get("windows") or [cfg["sr"]])]


def _member_tasks(spec: dict, methods) -> list[dict]:
    cfg = spec["cfg"]
    return [{"spec": method_spec(spec, meth), "sr": sr, "method": meth, "fold": f, "member": k}
            for sr in windows(cfg) for meth in methods
            for f in range(cfg["folds"]) for k in range(cfg["ensemble"])]


def train(cluster, spec: dict, methods) -> dict:
    """Train background flows (if needed) then every fold × member estimator; returns wall times."""
    cfg = spec["cfg"]
    wall: dict[str, float] = {}
    views = {tuple(method_spec(spec, m)["cfg"]["features"]): method_spec(spec, m) for m in methods
             if m in FLOW_METHODS}           # one set of background flows per feature view
    if views:
        tasks = [{"spec": s, "sr": sr, "member": k} for s in views.values()
                 for sr in windows(cfg) for k in range(cfg["n_flows"])]
        res = cluster.map(train_flow_task, tasks, retries=cfg["retries"], desc="background flows")
        wall["background_flow"] = sum(r["wall_s"] for r in res)
    for method in methods:
        res = cluster.map(fit_task, _member_tasks(spec, [method]), retries=cfg["retries"], desc=f"train {method}")
        wall[method] = sum(r["wall_s"] for r in res)
    return wall


def combine(spec: dict, method: str, sr, d: DijetData | None = None) -> np.ndarray:
    """Scores for every row of the table (NaN where not scored) from the saved per-task scores."""
    spec = method_spec(spec, method)
    cfg = spec["cfg"]
    d = d or task_data(spec)
    mdir = method_dir(spec, method, sr)
    # Every row is scored by the model of its own fold: training rows are then out-of-fold, and all
    # rows share one score definition. (Averaging the fold models for untrained rows gave them
    # narrower tails than the trained SR rows, so a top-ε cut passed more background inside the
    # training window than outside: a step at the SR edges that the bump hunt read as signal.)
    out = np.full(d.n, np.nan, dtype=np.float32)
    for f in range(cfg["folds"]):
        rows = task_rows(d, sr, cfg, f)
        per = np.stack([np.load(mdir / f"f{f}_m{k}.npy") for k in range(cfg["ensemble"])])
        if per.shape[1] != len(rows):
            raise ValueError(f"{mdir}/f{f}_m*.npy: {per.shape[1]} scores for {len(rows)} rows of fold {f} "
                             f"(stale artefacts: rerun `lhcad score`)")
        out[rows] = per.mean(axis=0)                          # mean over the fold's members
    return out


def evaluation_rows(d: DijetData, sr) -> tuple[np.ndarray, str]:
    """Labelled SR rows to evaluate on: the 'test' dataset if present, else the data's truth labels."""
    in_sr, _ = region_masks(d, sr, None)
    for name in ("test", "data"):
        rows = d.rows(name, required=False) & in_sr & (d.truth >= 0)
        if (d.truth[rows] > 0).any() and (d.truth[rows] == 0).any():
            return rows, name
    return np.zeros(d.n, bool), ""


def score(cluster, spec: dict, methods, write: bool = True) -> dict:
    """Score with every trained model (as tasks), combine folds/members, write scores, evaluate."""
    from lhcad import store as _store
    from lhcad.models.metrics import sic_summary

    cfg = spec["cfg"]
    results: dict = {}
    root = _store.open_store(spec["store"], mode="a") if write else None
    for method in methods:
        res = cluster.map(score_task, _member_tasks(spec, [method]), retries=cfg["retries"], desc=f"score {method}")
        mspec = method_spec(spec, method)
        d = task_data(mspec)
        for sr in windows(cfg):
            key = score_key(method, sr)
            full = combine(mspec, method, sr, d)
            mdir = method_dir(mspec, method, sr)
            infos = [json.loads(p.read_text()) for p in sorted(mdir.glob("f*_m*.json"))]
            summary: dict = {"method": method, "window": list(sr), "key": key,
                             "n_scored": int(np.isfinite(full).sum()),
                             "train_wall_s": sum(i.get("wall_s", 0.0) for i in infos),
                             "score_wall_s": sum(r["wall_s"] for r in res) / len(windows(cfg))}
            for extra in ("template_auc", "signal_fraction", "signal_fraction_true"):
                vals = [i[extra] for i in infos if i.get(extra) is not None]
                if vals:
                    summary[extra] = float(np.mean(vals))
                    summary[f"{extra}_folds"] = [float(v) for v in vals]
            rows, name = evaluation_rows(d, sr)
            if rows.any():
                summary.update(sic_summary(d.truth[rows] > 0, full[rows]))
                summary["evaluated_on"] = name
            _write_json(mdir / "summary.json", summary)
            if write:
                _store.write_scores(root, "dijet", key, full,
                                    attrs={k: v for k, v in summary.items() if not isinstance(v, dict)})
            results[key] = summary
    return results

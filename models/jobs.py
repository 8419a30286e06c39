"""Training and scoring as independent Dask tasks: windows × methods × folds × ensemble members.

Every piece of work is one task (a small picklable dict) run by :meth:`lhcad.cluster.Cluster.map`
with retries; a task that still fails raises, nothing is dropped. Each task reads its inputs from the
Zarr store, sets torch's thread count to its worker's threads, and writes its artefact atomically
under ``<artefacts>/<lo>_<hi>/``:

=====================================  ================================================================
``flow-<hash>/m<k>.pt``                background flow p(x | m) trained on the sidebands (shared by
                                       ANODE, CATHODE and R-ANODE; ``n_flows`` of them)
``<method>-<hash>/f<i>_m<k>.pt``       the estimator of fold i, ensemble member k (+ ``.json`` metrics)
``<method>-<hash>/f<i>_m<k>.npy``      its scores for every candidate row (SR ∪ SB, finite features)
``<method>-<hash>/summary.json``       combined metrics after scoring
=====================================  ================================================================

``<hash>`` fingerprints the settings and the store size, so a rerun with the same settings reuses
finished artefacts and a changed setting trains afresh.

k-fold: rows get a fold number from the seed; the model of fold i never trains on fold-i rows. A row
that some model trained on is scored by the members of its own held-out fold; every other row
(test set, extra background, sidebands a method did not train on) by the mean of all models.
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

METHODS = ("supervised", "iad", "cwola", "anode", "cathode", "ranode")
FLOW_METHODS = ("anode", "cathode", "ranode")


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
    if method in ("supervised", "iad", "cwola", "cathode"):
        keys += ["classifier", "hgb_max_iter", "mlp_epochs", "batch_size"]
    if method == "cathode":
        keys += ["oversample"]
    if method == "ranode":
        keys += ["ranode_epochs", "ranode_w_init", "flow_batch_size"]
    out = {k: cfg[k] for k in keys}
    if method in FLOW_METHODS:
        out["flow"] = _flow_settings(cfg)
        out["n_flows"] = cfg["n_flows"]
    return out


def flow_dir(spec: dict, sr) -> Path:
    return Path(spec["artefacts"]) / window_key(sr) / f"flow-{_fingerprint([_flow_settings(spec['cfg']), spec['n_rows']])}"


def method_dir(spec: dict, method: str, sr) -> Path:
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


@functools.lru_cache(maxsize=2)
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
    elif method in FLOW_METHODS:
        pos, neg = d.rows("data") & in_sr, none
    else:
        raise DataError(f"method {method!r} unknown (choose from {', '.join(METHODS)})")
    if not pos.any() or (method in ("supervised", "iad", "cwola") and not neg.any()):
        raise DataError(f"{d.store}: {method} has no training events in window {sr} "
                        f"({int(pos.sum())} class-1, {int(neg.sum())} class-0 rows)")
    return pos, neg


def classifier_params(cfg: dict, seed: int) -> dict:
    if cfg["classifier"] == "hgb":
        return {"n_members": 1, "max_iter": cfg["hgb_max_iter"], "random_state": seed}
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
    elif method == "cathode":
        from lhcad.models.cathode import CATHODE

        est = CATHODE(cfg["classifier"], classifier_params(cfg, seed), oversample=cfg["oversample"],
                      random_state=seed)
        est.fit(d.X[train1], d.m[train1], background_flow=_load_flow(spec, sr, k))
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
                     w_init=cfg["ranode_w_init"], device=cfg["device"], random_state=seed)
        est.fit(d.X[train1], d.m[train1], background_flow=_load_flow(spec, sr, k))
        info["signal_fraction"] = est.signal_fraction_
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
}


def estimator_class(method: str):
    import importlib

    module, name = _ESTIMATORS[method].split(":")
    return getattr(importlib.import_module(module), name)


def score_task(task: dict) -> dict:
    """Score every candidate row with one fitted estimator (reused when its scores are newer)."""
    spec, sr, method = task["spec"], tuple(task["sr"]), task["method"]
    base = method_dir(spec, method, sr) / f"f{task['fold']}_m{task['member']}"
    model, out = base.with_suffix(".pt"), base.with_suffix(".npy")
    if not model.exists():
        raise FileNotFoundError(f"{model}: no trained model (run `lhcad train {method}` first)")
    if out.exists() and out.stat().st_mtime >= model.stat().st_mtime:
        return {"path": str(out), "reused": True, "wall_s": 0.0}
    t0 = time.perf_counter()
    _set_threads(spec)
    d = task_data(spec)
    rows = candidates(d, sr, spec["cfg"])
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
    return [{"spec": spec, "sr": sr, "method": meth, "fold": f, "member": k}
            for sr in windows(cfg) for meth in methods
            for f in range(cfg["folds"]) for k in range(cfg["ensemble"])]


def train(cluster, spec: dict, methods) -> dict:
    """Train background flows (if needed) then every fold × member estimator; returns wall times."""
    cfg = spec["cfg"]
    wall: dict[str, float] = {}
    if any(m in FLOW_METHODS for m in methods):
        tasks = [{"spec": spec, "sr": sr, "member": k} for sr in windows(cfg) for k in range(cfg["n_flows"])]
        res = cluster.map(train_flow_task, tasks, retries=cfg["retries"], desc="background flows")
        wall["background_flow"] = sum(r["wall_s"] for r in res)
    for method in methods:
        res = cluster.map(fit_task, _member_tasks(spec, [method]), retries=cfg["retries"], desc=f"train {method}")
        wall[method] = sum(r["wall_s"] for r in res)
    return wall


def combine(spec: dict, method: str, sr, d: DijetData | None = None) -> np.ndarray:
    """Scores for every row of the table (NaN where not scored) from the saved per-task scores."""
    cfg = spec["cfg"]
    d = d or task_data(spec)
    rows = candidates(d, sr, cfg)
    mdir = method_dir(spec, method, sr)
    per = np.stack([[np.load(mdir / f"f{f}_m{k}.npy") for k in range(cfg["ensemble"])]
                    for f in range(cfg["folds"])])            # (folds, members, n_candidates)
    mean_members = per.mean(axis=1)                           # (folds, n_candidates)
    pos, neg = training_pool(d, method, sr, cfg)
    fid = folds_of(d.n, cfg["folds"], cfg["seed"])[rows]
    trained = (pos | neg)[rows]
    cand = mean_members.mean(axis=0)
    cand[trained] = mean_members[fid[trained], np.flatnonzero(trained)]
    out = np.full(d.n, np.nan, dtype=np.float32)
    out[rows] = cand
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
    d = task_data(spec)
    root = _store.open_store(spec["store"], mode="a") if write else None
    for method in methods:
        res = cluster.map(score_task, _member_tasks(spec, [method]), retries=cfg["retries"], desc=f"score {method}")
        for sr in windows(cfg):
            key = score_key(method, sr)
            full = combine(spec, method, sr, d)
            mdir = method_dir(spec, method, sr)
            infos = [json.loads(p.read_text()) for p in sorted(mdir.glob("f*_m*.json"))]
            summary: dict = {"method": method, "window": list(sr), "key": key,
                             "n_scored": int(np.isfinite(full).sum()),
                             "train_wall_s": sum(i.get("wall_s", 0.0) for i in infos),
                             "score_wall_s": sum(r["wall_s"] for r in res) / len(windows(cfg))}
            for extra in ("template_auc", "signal_fraction"):
                vals = [i[extra] for i in infos if extra in i]
                if vals:
                    summary[extra] = float(np.mean(vals))
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

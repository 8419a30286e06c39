"""L1 AD jobs: train (one Dask task per model), score into the store, evaluate the ADC2021 metrics.

Data flow (everything through the Zarr store):

1. :func:`train` — the ``sm`` background rows are split once (seeded) into a training part and a
   held-out test part; the split is saved as ``<out>/split.npz``. Each model is trained in its own
   task (``Cluster.map``) reading its rows from the store, and saved as ``<out>/<name>.pt``.
2. :func:`score` — every saved model scores *all* ``l1`` rows; each score kind is written to
   ``l1/scores/<name>__<kind>`` (e.g. ``vae__mu2``).
3. :func:`evaluate` — AUC and TPR at the requested FPRs (default 1e-5) for every model score and
   signal on the held-out background, FLOPs, ROC plots, latent-space interpretation and the
   black-box submission h5. Returns (and writes) the metrics JSON.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from lhcad.models.l1_preprocess import BACKGROUND, BLACKBOX, SIGNALS, load_l1, split_background

log = logging.getLogger(__name__)

MODEL_NAMES = ("ae", "ae_std", "vae", "invae")


class StaleScoresError(ValueError):
    """Stored scores that do not belong to the current model/split, or that are NaN where evaluated."""


def _digest(data: bytes) -> str:
    """SHA-256, first 16 hex digits."""
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """Digest of a file: identifies one trained model."""
    return _digest(Path(path).read_bytes())


def rows_fingerprint(rows: np.ndarray) -> str:
    """Digest of a row-index array: identifies one background split."""
    return _digest(np.ascontiguousarray(rows, dtype=np.int64).tobytes())


def split_fingerprint(models_dir: str | Path) -> str:
    """Fingerprint of the training rows in ``<models_dir>/split.npz``."""
    split_file = Path(models_dir) / "split.npz"
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file}: missing (written by `lhcad l1 train`)")
    return rows_fingerprint(np.load(split_file)["train_rows"])


def _other_split(model, models_dir: Path, name: str, split: str) -> str | None:
    """Why ``model`` does not belong to ``split`` (trained on other rows, now in the test set); None: it does."""
    trained_on = getattr(model, "train_split_", None)
    if trained_on is None or trained_on == split:
        return None
    return (f"model {name}: {models_dir / (name + '.pt')} was trained on another background split ({trained_on}) "
            f"than {models_dir / 'split.npz'} ({split})")


def stale_reason(root, models_dir: str | Path, name: str, kind: str, model=None) -> str | None:
    """Why ``l1/scores/<name>__<kind>`` cannot be evaluated with ``<models_dir>/<name>.pt`` (None: current).

    Scores are keyed by the model file's fingerprint (a retrained model — other seed or recipe —
    has another) and by the background split they were scored with; a model trained on another
    split than ``split.npz`` (its training rows would sit in the test set) is rejected too.
    """
    models_dir = Path(models_dir)
    key = f"{name}__{kind}"
    try:
        attrs = dict(root["l1"]["scores"][key].attrs)
    except KeyError:
        return f"l1/scores/{key} not found (run `lhcad l1 score`)"
    split = split_fingerprint(models_dir)
    wrong_split = _other_split(model, models_dir, name, split)
    if wrong_split:
        return f"{wrong_split}: retrain it with this --seed/--train-seed"
    have = attrs.get("model_sha256")
    if have != file_fingerprint(models_dir / f"{name}.pt"):
        return (f"l1/scores/{key} was written by another model ({have or 'no fingerprint'}) than "
                f"{models_dir / (name + '.pt')}: re-score it (`lhcad l1 score`)")
    if attrs.get("skip_training_rows") and attrs.get("split_sha256") != split:
        return (f"l1/scores/{key} was scored with another background split ({attrs.get('split_sha256')}) than "
                f"{models_dir / 'split.npz'} ({split}): re-score it (`lhcad l1 score`)")
    return None


def make_model(name: str, **params):
    """A fresh estimator by short name (``ae``, ``vae``, ``invae``)."""
    from lhcad.models.l1_ae import DenseAE
    from lhcad.models.l1_invae import INVAE
    from lhcad.models.l1_vae import VAE

    classes = {"ae": DenseAE, "ae_std": DenseAE, "vae": VAE, "invae": INVAE}
    if name not in classes:
        raise ValueError(f"unknown L1 model {name!r} (choose from: {', '.join(classes)})")
    if name == "ae_std":  # the dense AE with the VAE's input standardisation (a fair comparison for the VAE)
        params = {"standardise": True, **params}
    return classes[name](**params)


def _train_task(item: dict) -> str:
    """One Dask task: read the training rows from the store, fit, save; returns the model path."""
    from lhcad.store import open_store, read_columns

    root = open_store(item["store"], mode="r")
    rows = np.asarray(item["rows"])
    particles = read_columns(root, "l1", ["particles"], rows=rows)["particles"]
    model = make_model(item["name"], **item["params"]).fit(np.asarray(particles), progress=item.get("progress", False),
                                                           threads=item.get("threads"))
    model.train_split_ = item.get("split")  # the background split it belongs to (its test rows are unseen)
    return str(model.save(item["path"]))


def train(store: str, out: str | Path, models=("ae", "vae"), *, epochs: int = 20, train_fraction: float = 0.5,
          max_train: int | None = None, seed: int = 0, params: dict | None = None, cluster=None,
          invae_max_train: int | None = 200_000) -> dict:
    """Split the background, train each model (one task each) and save them under ``out``.

    ``params[name]`` overrides hyper-parameters per model; the IN-VAE (≈ 100× the FLOPs of the dense
    models) trains on at most ``invae_max_train`` events. Returns ``{name: model path}``.
    """
    from lhcad.cluster import open_cluster
    from lhcad.config import ClusterConfig
    from lhcad.store import dataset_names, open_store, read_columns

    for name in models:
        make_model(name)  # validates the name before any work
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    root = open_store(store, mode="r")
    names = dataset_names(root, "l1")
    if BACKGROUND not in names:
        raise ValueError(f"{store}: l1 has no {BACKGROUND!r} background dataset (have: {names})")
    code = read_columns(root, "l1", ["dataset"])["dataset"]
    bkg_rows = np.flatnonzero(code == names.index(BACKGROUND))
    tr, te = split_background(len(bkg_rows), train_fraction, seed)
    train_rows, test_rows = bkg_rows[tr], bkg_rows[te]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "split.npz", train_rows=train_rows, test_rows=test_rows, seed=seed)
    items = []
    for name in models:
        rows = train_rows
        cap = invae_max_train if name == "invae" else max_train
        if cap is not None and len(rows) > cap:
            rows = np.sort(np.random.default_rng(seed).choice(rows, cap, replace=False))
        p = {"epochs": epochs, "seed": seed, **(params or {}).get(name, {})}
        items.append({"store": str(store), "name": name, "params": p, "rows": rows, "split": rows_fingerprint(train_rows),
                      "path": str(out / f"{name}.pt"), "progress": cluster is None})
    # a local process pool runs `workers` fits at once: split the cores between them (torch's default of
    # all cores per process oversubscribes a small machine and its OpenMP threads then spin-wait)
    if cluster is not None and getattr(cluster, "client", None) is None and cluster.config.type == "futures":
        threads = max(1, len(os.sched_getaffinity(0)) // max(1, min(cluster.config.workers, len(items))))
        for item in items:
            item["threads"] = threads
    # longest fit first (the IN-VAE), so the pool does not end with it running alone
    order = sorted(range(len(items)), key=lambda i: items[i]["name"] != "invae")
    items, models = [items[i] for i in order], [models[i] for i in order]
    log.info("training %s on %d background events (%d held out)", ", ".join(models), len(train_rows), len(test_rows))
    if cluster is None:
        with open_cluster(ClusterConfig(type="iterative")) as cl:
            paths = cl.map(_train_task, items, desc="train L1 models")
    else:
        paths = cluster.map(_train_task, items, desc="train L1 models", key_prefix="l1-train")
    return dict(zip(models, paths, strict=True))


def kept_models_to_rescore(store: str, models_dir: str | Path, names) -> list[str]:
    """Saved models ``names`` reused as they are (not retrained): which need re-scoring.

    A kept model whose stored scores were written for another model file or split is returned (it is
    re-scored); one trained on another background split than ``split.npz`` — e.g. kept from a run with
    another ``--train-seed`` — raises :class:`StaleScoresError` (its training rows are in the test set).
    """
    from lhcad.models.l1_base import load_model
    from lhcad.store import open_store

    root = open_store(store, mode="r")
    paths = model_paths(models_dir)
    split = split_fingerprint(models_dir)
    rescore = []
    for name in names:
        model = load_model(paths[name])
        wrong_split = _other_split(model, Path(models_dir), name, split)
        if wrong_split:
            raise StaleScoresError(f"{wrong_split}; retrain it (drop it from --keep-models) or use its --train-seed")
        if any(stale_reason(root, models_dir, name, kind, model) for kind in model.score_kinds):
            rescore.append(name)
    return rescore


def model_paths(models_dir: str | Path) -> dict[str, Path]:
    """The saved models in ``models_dir`` by name (``ae.pt`` → ``ae``)."""
    models_dir = Path(models_dir)
    paths = {p.stem: p for p in sorted(models_dir.glob("*.pt")) if p.stem in MODEL_NAMES}
    if not paths:
        raise FileNotFoundError(f"{models_dir}: no saved L1 models (*.pt from `lhcad l1 train`)")
    return paths


def score(store: str, models_dir: str | Path, chunk: int = 500_000, names=None,
          skip_training_rows: bool = False) -> dict[str, list[str]]:
    """Score every l1 row with every model in ``models_dir`` (only ``names`` if given); write
    ``l1/scores/<name>__<kind>``. With ``skip_training_rows`` the background rows the models were
    trained on (``split.npz``) are not scored and hold NaN (evaluation uses only held-out rows)."""
    from lhcad.log import progress
    from lhcad.models.l1_base import load_model
    from lhcad.store import n_rows, open_store, read_columns, write_scores

    root = open_store(store, mode="a")
    n = n_rows(root, "l1")
    keep = np.ones(n, dtype=bool)
    split = None
    if skip_training_rows:
        train_rows = np.load(Path(models_dir) / "split.npz")["train_rows"]
        keep[train_rows] = False
        split = rows_fingerprint(train_rows)
    written: dict[str, list[str]] = {}
    for name, path in model_paths(models_dir).items():
        if names is not None and name not in names:
            continue
        model = load_model(path)
        parts: dict[str, list] = {}
        with progress() as bar:
            task = bar.add_task(f"score {name}", total=n)
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                sel = np.flatnonzero(keep[start:stop])
                p = read_columns(root, "l1", ["particles"], rows=slice(start, stop))["particles"][sel]
                res = model.score_all(p) if sel.size else {}
                for k in model.score_kinds:
                    full = np.full(stop - start, np.nan, dtype=np.float32)
                    if sel.size:
                        full[sel] = res[k]
                    parts.setdefault(k, []).append(full)
                bar.advance(task, stop - start)
        for kind, values in parts.items():
            write_scores(root, "l1", f"{name}__{kind}", np.concatenate(values),
                         attrs={"model": str(path), "model_sha256": file_fingerprint(path),
                                "skip_training_rows": bool(skip_training_rows), "split_sha256": split})
        written[name] = sorted(parts)
    return written


def evaluate(store: str, models_dir: str | Path, out: str | Path | None = None, fprs=(1e-5,),
             latent_events: int = 200_000, blackbox_score: str = "vae_mu2", names=None) -> dict:
    """ADC2021 metrics from the stored scores (held-out background only); see module docstring.

    ``names``: evaluate only these saved models (default: all in ``models_dir``). Scores written for
    another model file or split, and NaN scores on evaluated rows, raise :class:`StaleScoresError`
    naming the model and the score key.

    ``blackbox_score`` (``<model>_<kind>``, or ``ae``) ranks the black-box events for the submission
    file; when that model was not trained, the first trained model's default score is used.
    """
    from lhcad.models import l1_metrics as M
    from lhcad.models.l1_base import load_model
    from lhcad.store import dataset_names, open_store, read_columns, read_scores

    only = None if names is None else list(names)
    models_dir = Path(models_dir)
    out = Path(out or models_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = open_store(store, mode="r")
    names = dataset_names(root, "l1")
    code = read_columns(root, "l1", ["dataset"])["dataset"]
    split_file = models_dir / "split.npz"
    if not split_file.exists():
        raise FileNotFoundError(f"{split_file}: missing (written by `lhcad l1 train`)")
    test_rows = np.load(split_file)["test_rows"]
    signals = [s for s in SIGNALS if s in names]
    if not signals:
        raise ValueError(f"{store}: l1 has none of the signal datasets {list(SIGNALS)} (have: {names})")
    sig_rows = {s: np.flatnonzero(code == names.index(s)) for s in signals}
    result: dict = {"n_background_test": int(len(test_rows)), "n_signal": {s: int(len(r)) for s, r in sig_rows.items()},
                    "auc": {}, "flops": {}, "roc": {}}
    for f in fprs:
        result[M.fpr_key(f)] = {}
    curves: dict = {s: {} for s in signals}
    paths = model_paths(models_dir)
    if only is not None:
        missing = [n for n in only if n not in paths]
        if missing:
            raise FileNotFoundError(f"{models_dir}: no saved model(s) {missing} (have: {sorted(paths)})")
        paths = {n: p for n, p in paths.items() if n in only}
    models = {name: load_model(p) for name, p in paths.items()}
    used = np.r_[test_rows, *sig_rows.values()]  # the rows evaluated (NaN check)
    for name, model in models.items():
        result["flops"][name] = M.model_flops(model)
        for kind in model.score_kinds:
            key = name if kind == "mse" else f"{name}_{kind}"
            why = stale_reason(root, models_dir, name, kind, model)
            if why:
                raise StaleScoresError(f"model {name}, score {key}: {why}")
            s = read_scores(root, "l1", f"{name}__{kind}")
            n_nan = int(np.isnan(s[used]).sum())
            if n_nan:
                raise StaleScoresError(f"model {name}, score l1/scores/{name}__{kind}: {n_nan} NaN scores on the "
                                       f"{len(used)} held-out background + signal rows (diverged training or scores "
                                       f"from another split: re-train/re-score)")
            bkg = s[test_rows]
            result["auc"][key] = {sig: M.auc(bkg, s[r]) for sig, r in sig_rows.items()}
            for f in fprs:
                per = {}
                for sig, r in sig_rows.items():
                    try:
                        per[sig] = M.tpr_at_fpr(bkg, s[r], f)
                    except ValueError as exc:
                        per[sig] = {"tpr": None, "error": str(exc)}
                result[M.fpr_key(f)][key] = per
            for sig, r in sig_rows.items():
                fpr, tpr = M.roc_curve(bkg, s[r], n_points=60)
                curves[sig][key] = (fpr, tpr)
                result["roc"].setdefault(key, {})[sig] = {"fpr": fpr.tolist(), "tpr": tpr.round(5).tolist()}
    plots = M.plot_rocs({SIGNALS[s]: v for s, v in curves.items()}, out / "plots", fpr_mark=min(fprs))
    # latent-space interpretation on a sample of held-out background + all signals
    rng = np.random.default_rng(0)
    lat_rows = np.sort(np.r_[rng.choice(test_rows, min(len(test_rows), latent_events), replace=False),
                             *[r[:latent_events // 4] for r in sig_rows.values()]])
    lat_data = read_columns(root, "l1", ["particles"], rows=lat_rows)["particles"]
    lat_names = np.asarray(names)[code[lat_rows]]
    result["latent"] = {}
    for name, model in models.items():
        if "latent" in model.score_all(lat_data[:2]):
            lat = model.score_all(lat_data)["latent"]
            info = M.latent_interpretation(lat, lat_names, out / "plots", prefix=name, background=BACKGROUND)
            plots.append(info.pop("plot"))
            result["latent"][name] = info
    # black box: ids of the most anomalous events by the primary model
    if BLACKBOX in names:
        primary, _, kind = blackbox_score.partition("_")
        if primary not in models:
            primary, kind = next(iter(models)), ""
        kind = kind or models[primary].default_score
        if kind not in models[primary].score_kinds:
            raise ValueError(f"blackbox score {blackbox_score!r}: {primary} has scores {models[primary].score_kinds}")
        key = primary if kind == "mse" else f"{primary}_{kind}"
        bb_rows = np.flatnonzero(code == names.index(BLACKBOX))
        s = read_scores(root, "l1", f"{primary}__{kind}")[bb_rows]
        perf = {"model": key, "auc": result["auc"][key],
                "tpr_at_fpr_1e-5": {k: v.get("tpr") for k, v in result["tpr_at_fpr_1e-5"].get(key, {}).items()}
                if "tpr_at_fpr_1e-5" in result else {}}
        sub = M.write_blackbox_submission(out / "blackbox_submission.h5", s, np.arange(len(bb_rows)), perf)
        result["blackbox"] = {"path": str(sub), "model": key, "n_events": int(len(bb_rows))}
    result["plots"] = plots
    (out / "l1_metrics.json").write_text(json.dumps(result, indent=1, default=float))
    return result


def summary_table(result: dict, fpr: float = 1e-5) -> list[list[str]]:
    """Rows (model, signal, AUC, TPR ± err) for printing."""
    from lhcad.models.l1_metrics import fpr_key

    rows = []
    tprs = result.get(fpr_key(fpr), {})
    for key, per in result["auc"].items():
        for sig, a in per.items():
            t = tprs.get(key, {}).get(sig, {})
            tpr = "n/a" if t.get("tpr") is None else f"{t['tpr']:.4f} ± {t['tpr_err']:.4f}"
            rows.append([key, sig, f"{a:.4f}", tpr])
    return rows


def pipeline_stage(cfg, ctx) -> dict:
    """``lhcad run`` stage: train the configured models on the store, score, evaluate."""
    from lhcad.cluster import open_cluster

    l1 = cfg.l1
    out = ctx.workdir / "l1"
    with open_cluster(cfg.cluster) as cl:
        vae = {"beta": l1.vae_beta, "standardise": l1.vae_standardise, "free_bits": l1.vae_free_bits}
        paths = train(cfg.store, out, models=l1.models, epochs=l1.epochs, train_fraction=l1.train_fraction,
                      max_train=l1.max_train, seed=l1.seed, cluster=cl, params={"vae": vae})
    score(cfg.store, out)
    res = evaluate(cfg.store, out, out, fprs=tuple(l1.fprs))
    figures = {"n_background_test": res["n_background_test"], "auc": res["auc"],
               "flops": {k: v["flops"] for k, v in res["flops"].items()}}
    from lhcad.models.l1_metrics import fpr_key

    for f in l1.fprs:
        key = fpr_key(f)
        figures[key] = {m: {s: v.get("tpr") for s, v in per.items()} for m, per in res[key].items()}
    artefacts = {f"model_{k}": v for k, v in paths.items()}
    artefacts["metrics"] = str(out / "l1_metrics.json")
    if "blackbox" in res:
        artefacts["blackbox_submission"] = res["blackbox"]["path"]
    return {"figures": figures, "plots": res["plots"], "artefacts": artefacts}

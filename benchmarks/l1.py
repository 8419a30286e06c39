"""L1 trigger AD benchmark (ADC2021 metrics): dense AE vs VAE (μ²) vs IN-VAE.

Default path (everything real): ``lhcad generate l1`` → ``lhcad process l1`` (coffea) → Zarr store →
train (``sm`` split in half: ≥ 1 M held-out background events for TPR at FPR = 1e-5) → score →
evaluate. ``--adc2021 DIR`` instead imports the public ADC2021 h5 files found in DIR with
``lhcad.importers.import_adc2021`` (file names as on Zenodo: background_for_training.h5,
Ato4l_lepFilter_13TeV*.h5, leptoquark_LOWMASS_lepFilter_13TeV*.h5, hToTauTau_13TeV_PU20*.h5,
hChToTauNu_13TeV_PU20*.h5, and optionally the black box). ``--deploy`` also runs the firmware
stage on the VAE. ``--quick`` is a small smoke run (FPR 1e-3; 1e-5 is not reachable there).

Output JSON (``--json PATH``): ``tpr_at_fpr_1e-5[model][signal]`` (tpr, tpr_err, Clopper–Pearson
interval, achieved FPR), ``auc[model][signal]``, ``flops[model]``, ``goals`` (VAE μ² vs dense AE on
every signal, deployed-encoder FLOPs ≤ 4054), wall times per phase, and the machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import sys
import time
from pathlib import Path

ADC2021_FILES = {
    "sm": ["background_for_training*.h5", "*background*.h5"],
    "ato4l": ["*Ato4l*.h5"],
    "lq_btau": ["*leptoquark*.h5"],
    "h0_tautau": ["*hToTauTau*.h5"],
    "hch_taunu": ["*hChToTauNu*.h5"],
    "blackbox": ["*BlackBox*.h5", "*blackbox*.h5"],
}


def _load() -> list[float]:
    """1, 5, 15-minute load averages (the machine is shared: wall times depend on them)."""
    return [round(v, 2) for v in os.getloadavg()]


def _cli(argv: list[str]) -> None:
    from lhcad.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"lhcad {' '.join(argv)} failed with exit code {exc.code}") from None


def import_adc2021_dir(directory: Path, store: str) -> dict:
    from lhcad.importers import import_adc2021

    files = sorted(p.name for p in directory.glob("*.h5"))
    used: dict[str, list[str]] = {}
    for dataset, patterns in ADC2021_FILES.items():
        for pat in patterns:
            hits = [f for f in files if fnmatch.fnmatch(f, pat) and not any(f in v for v in used.values())]
            if dataset == "sm":
                hits = [f for f in hits if "blackbox" not in f.lower()]
            if hits:
                used[dataset] = hits
                break
    if "sm" not in used:
        raise SystemExit(f"{directory}: no ADC2021 background file (background_for_training.h5) found")
    for dataset, names in used.items():
        import_adc2021([directory / n for n in names], store, dataset)
    return used


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--quick", action="store_true", help="small smoke run (20k background, FPR 1e-3)")
    ap.add_argument("--adc2021", type=Path, help="directory with the public ADC2021 h5 files (import instead of generate)")
    ap.add_argument("--workdir", type=Path, default=Path(".bench/l1_work"), help="generated files, store, models")
    ap.add_argument("--events", type=int, default=2_100_000, help="SM background events to generate")
    ap.add_argument("--signal-events", type=int, default=200_000,
                    help="events per signal (200 k: a TPR of 1e-3 is 200 ± 14 events; a TPR of 0 bounds it < 1.5e-5 at 95 %% CL)")
    ap.add_argument("--models", default="ae,vae,invae", help="comma-separated models")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--max-train", type=int, default=600_000, help="cap on training events (dense models)")
    ap.add_argument("--invae-max-train", type=int, default=150_000, help="cap on IN-VAE training events")
    ap.add_argument("--invae-epochs", type=int, default=8)
    ap.add_argument("--deploy", action="store_true", help="also run the firmware stage on the VAE")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="reuse an existing store in --workdir")
    ap.add_argument("--keep-models", default="", help="comma-separated models to reuse from WORKDIR/models "
                    "(with --reuse: not retrained; their stored scores are re-scored when they belong to another model file "
                    "or split, and a model trained on another split, i.e. another --train-seed, is rejected)")
    ap.add_argument("--beta", type=float, default=None, help="β of the VAE and the IN-VAE (default: the class default)")
    ap.add_argument("--vae-epochs", type=int, default=None, help="VAE epochs (default: --epochs)")
    ap.add_argument("--vae-standardise", action=argparse.BooleanOptionalAction, default=True,
                    help="standardise the VAE encoder input (the issue-9 recipe; default on)")
    ap.add_argument("--vae-free-bits", type=float, default=None, help="VAE KL floor per latent dimension (default 0)")
    ap.add_argument("--train-seed", type=int, default=0,
                    help="seed of the train/test split of the background and of the model initialisation "
                         "(vary it to see the training spread of the AUCs and TPRs)")
    args = ap.parse_args()

    from lhcad.models import l1_jobs
    from lhcad.models.l1_metrics import fpr_key

    if args.quick:
        args.events, args.signal_events, args.epochs = 20_000, 2_000, 3
        args.invae_max_train, args.invae_epochs, args.max_train = 5_000, 1, None
        fprs = (1e-3, 1e-5)
    else:
        fprs = (1e-5, 1e-4, 1e-3)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / "store.zarr")
    times: dict[str, float] = {}
    loads: dict[str, list[float]] = {"start": _load()}
    source: dict = {}
    t0 = time.perf_counter()
    if args.reuse and Path(store).exists():
        source = {"kind": "reused store", "store": store}
    elif args.adc2021:
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        source = {"kind": "adc2021", "files": import_adc2021_dir(args.adc2021, store)}
        times["import_s"] = time.perf_counter() - t0
        loads["after_import"] = _load()
    else:
        import shutil

        shutil.rmtree(store, ignore_errors=True)
        gen = work / "generated"
        shutil.rmtree(gen, ignore_errors=True)
        _cli(["-q", "generate", "l1", "--events", str(args.events), "--signal-events", str(args.signal_events),
              "--blackbox-events", str(max(10_000, args.signal_events)), "--out", str(gen), "--seed", "11"])
        times["generate_s"] = time.perf_counter() - t0
        loads["after_generate"] = _load()
        t1 = time.perf_counter()
        _cli(["-q", "process", "l1", "--fileset", str(gen / "fileset.json"), "--out", store,
              "--executor", "futures", "--workers", str(args.workers)])
        times["process_s"] = time.perf_counter() - t1
        loads["after_process"] = _load()
        source = {"kind": "generated", "events": args.events, "signal_events": args.signal_events}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    t1 = time.perf_counter()
    from lhcad.cluster import open_cluster
    from lhcad.config import ClusterConfig

    params = {"invae": {"epochs": args.invae_epochs}, "vae": {}}
    if args.beta is not None:
        params["vae"]["beta"] = params["invae"]["beta"] = args.beta
    if args.vae_epochs is not None:
        params["vae"]["epochs"] = args.vae_epochs
    params["vae"]["standardise"] = args.vae_standardise
    if args.vae_free_bits is not None:
        params["vae"]["free_bits"] = args.vae_free_bits
    keep = [m for m in args.keep_models.split(",") if m.strip()] if args.reuse else []
    keep = [m for m in keep if m in models and (work / "models" / f"{m}.pt").exists()]
    fit = [m for m in models if m not in keep]
    if keep:
        print(f"reusing trained models {keep} from {work / 'models'} (re-scored if their stored scores are stale)")
    if fit:
        with open_cluster(ClusterConfig(type="futures" if len(fit) > 1 else "iterative", workers=args.workers)) as cl:
            l1_jobs.train(store, work / "models", fit, epochs=args.epochs, max_train=args.max_train,
                          invae_max_train=args.invae_max_train, params=params, cluster=cl,
                          seed=args.train_seed)
    times["train_s"] = time.perf_counter() - t1
    loads["after_train"] = _load()
    t1 = time.perf_counter()
    try:
        # kept models: scores keyed by model file + split; stale ones are re-scored, ones trained on
        # another split (another --train-seed) rejected
        rescore = l1_jobs.kept_models_to_rescore(store, work / "models", keep)
    except l1_jobs.StaleScoresError as exc:
        raise SystemExit(f"error: {exc}") from None
    if rescore:
        print(f"re-scoring kept models {rescore}: their stored scores belong to another model file or split")
    l1_jobs.score(store, work / "models", names=fit + rescore, skip_training_rows=True)
    times["score_s"] = time.perf_counter() - t1
    loads["after_score"] = _load()
    t1 = time.perf_counter()
    try:
        res = l1_jobs.evaluate(store, work / "models", work / "results", fprs=fprs, latent_events=100_000,
                               names=models)
    except l1_jobs.StaleScoresError as exc:
        raise SystemExit(f"error: {exc}") from None
    times["evaluate_s"] = time.perf_counter() - t1
    loads["after_evaluate"] = _load()

    main_fpr = fprs[0]
    table = res[fpr_key(main_fpr)]
    print(f"\nL1 AD — held-out background: {res['n_background_test']} events; TPR at FPR = {main_fpr:g}")
    print(f"{'score':<12}" + "".join(f"{s:>24}" for s in res["n_signal"]))
    for key in res["auc"]:
        cells = []
        for s in res["n_signal"]:
            t = table[key][s]
            cells.append(f"{t['tpr']:.4f}±{t['tpr_err']:.4f} ({res['auc'][key][s]:.3f})" if t.get("tpr") is not None else "n/a")
        print(f"{key:<12}" + "".join(f"{c:>24}" for c in cells))
    for name, f in res["flops"].items():
        print(f"FLOPs {name}: {f['flops']} (non-zero {f['flops_nonzero']}, with score {f['flops_with_score']}; {f['deployed']})")

    goals = {}
    if "vae_mu2" in table and "ae" in table:
        per = {}
        for s in res["n_signal"]:
            v, a = table["vae_mu2"][s].get("tpr"), table["ae"][s].get("tpr")
            per[s] = None if v is None or a is None else bool(v >= a)
        goals["vae_mu2_tpr_ge_ae"] = per
        goals["vae_mu2_tpr_ge_ae_all"] = all(v for v in per.values()) if None not in per.values() else None
        # the strict comparison flips on a few events when both TPRs are ~1/n_sig: also within 2 sigma
        # (sigma from the Clopper-Pearson 68 % half-widths of both, which stay > 0 for 0 passing events)
        within = {}
        for s in res["n_signal"]:
            v, a = table["vae_mu2"][s], table["ae"][s]
            if v.get("tpr") is None or a.get("tpr") is None:
                within[s] = None
                continue
            sig = ((v["tpr_hi"] - v["tpr_lo"]) ** 2 / 4 + (a["tpr_hi"] - a["tpr_lo"]) ** 2 / 4) ** 0.5
            within[s] = bool(v["tpr"] >= a["tpr"] - 2 * sig)
        goals["vae_mu2_tpr_ge_ae_within_2sigma"] = within
    if "vae_mu2" in table and "ae_std" in table:
        # the AE with the same input standardisation as the VAE: is the gain the VAE's or the inputs'?
        per = {s: None if table["vae_mu2"][s].get("tpr") is None or table["ae_std"][s].get("tpr") is None
               else bool(table["vae_mu2"][s]["tpr"] >= table["ae_std"][s]["tpr"]) for s in res["n_signal"]}
        goals["vae_mu2_tpr_ge_ae_std"] = per
    if "invae_mu2" in table and "vae_mu2" in table:
        goals["invae_vs_vae"] = {
            fpr_key(main_fpr): {s: {"invae_mu2": table["invae_mu2"][s].get("tpr"), "vae_mu2": table["vae_mu2"][s].get("tpr")}
                                for s in res["n_signal"]},
            "auc": {s: {"invae_mu2": res["auc"]["invae_mu2"][s], "vae_mu2": res["auc"]["vae_mu2"][s]} for s in res["n_signal"]},
            "flops_ratio": res["flops"]["invae"]["flops_with_score"] / res["flops"]["vae"]["flops_with_score"]}
    if "vae" in res["flops"]:
        goals["vae_encoder_flops"] = res["flops"]["vae"]["flops_with_score"]
        goals["vae_encoder_flops_le_4054"] = res["flops"]["vae"]["flops_with_score"] <= 4054
    print("goals:", json.dumps(goals))

    out = {"source": source, "train_seed": args.train_seed, "fprs": list(fprs), "n_background_test": res["n_background_test"],
           "n_signal": res["n_signal"], "auc": res["auc"], "flops": res["flops"], "goals": goals,
           **{fpr_key(f): res[fpr_key(f)] for f in fprs}, "wall_s": times, "latent": res.get("latent", {}),
           "blackbox": res.get("blackbox"), "plots": res["plots"],
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                       "load_average_1_5_15min": loads,
                       "note": "shared 2-core machine, loaded by other jobs: wall times are indicative"}}
    if args.deploy and "vae" in models:
        from lhcad.config import DeployConfig
        from lhcad.deploy.firmware import build_firmware

        t1 = time.perf_counter()
        cfg = DeployConfig(qat_epochs=2 if args.quick else 10, qat_events=10_000 if args.quick else 200_000,
                           check_events=10_000 if args.quick else 1_000_000)
        rep = build_firmware(work / "models" / "vae.pt", store, work / "firmware", cfg)
        times["deploy_s"] = time.perf_counter() - t1
        loads["after_deploy"] = _load()
        out["deploy"] = {k: rep[k] for k in ("sparsity", "flops", "resources", "latency", "accuracy", "bit_widths", "rescaling", "artefacts")}
        print("deploy:", json.dumps({"sparsity": rep["sparsity"]["pruned"]["total"], "flops": rep["flops"],
                                     "accuracy": {k: v for k, v in rep["accuracy"].items() if k != "tpr"}}, default=float))
    times["total_s"] = time.perf_counter() - t0
    loads["end"] = _load()
    print("load averages (1, 5, 15 min):", json.dumps(loads))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

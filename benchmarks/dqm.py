"""DQM benchmark: generated runs with injected faults → per-LS AEs → certification, against the truth.

Real path: ``lhcad generate dqm`` (NanoAOD + truth.json + brilcalc lumi.csv) → ``lhcad process lumi``
(coffea LumiProcessor → Zarr ``lumi/<ME>``) → ``lhcad.dqm`` train / score (Dask tasks) / certify,
once with the dense AE and once with the LSTM AE. The GOOD reference (training + calibration) is every
other GOOD run of the truth ordered by pile-up (so it spans the pile-up range); the remaining GOOD
runs measure the false-flag rate.

The defaults (40 runs of ~400 LS, 6 BAD) give ~6000 LSs of unseen GOOD runs, so that a false-flag rate
of 1e-3 is measured with a binomial uncertainty below it (``ls_false_flag_rate_ci68``,
``ls_false_flag_rate_upper95``, ``n_good_ls_tested``), and ~2300 held-out GOOD LSs, enough for the
conformal threshold with 90 % confidence (no tail extrapolation).

Figures per model (JSON ``models.<dense|lstm>``): ``ls_recall`` and ``ls_recall_per_kind`` (truly
faulty LSs flagged), ``ls_false_flag_rate`` (LSs of unseen GOOD runs flagged), ``recovered_lumi_pb``
(certified luminosity of the runs that truly contain faults, ``LumiData`` on the generator's CSV) vs
``true_recoverable_lumi_pb`` (their fault-free LSs), ``recovered_lumi_rel_diff``, run verdicts, and
``train_wall_s`` / ``score_wall_s``; ``run_test_ks`` repeats the certification with the KS run test.
``--reuse`` keeps the generated runs and processed store of ``--workdir`` if they were made with the
same generator settings.

    python benchmarks/dqm.py --quick --json dqm_quick.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--quick", action="store_true", help="small smoke-run (fewer runs, LSs, epochs)")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--bad-runs", type=int, default=6)
    ap.add_argument("--ls-per-run", type=int, default=400)
    ap.add_argument("--events-per-ls", type=int, default=1000,
                    help="events per LS at the highest luminosity (per-LS statistics of the MEs)")
    ap.add_argument("--severity", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--false-flag-rate", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--executor", default="dask-local", help="cluster type for training/scoring")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--workdir", type=Path, help="keep inputs/outputs here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse --workdir's generated runs and store if made with the same generator settings")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.bad_runs, args.ls_per_run, args.epochs = 8, 3, 100, 15

    from lhcad.cluster import open_cluster
    from lhcad.config import ClusterConfig, DQMConfig, GenerateDQMConfig
    from lhcad.dqm import workflow
    from lhcad.dqm.evaluate import evaluate, read_truth, spread_reference
    from lhcad.dqm.lumi import load_lumidata
    from lhcad.generate.dqm import generate_dqm

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lhcad-dqm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    gen, store = work / "generated", str(work / "store.zarr")
    gcfg = GenerateDQMConfig(runs=args.runs, bad_runs=args.bad_runs, ls_per_run=args.ls_per_run,
                             events_per_ls=args.events_per_ls, severity=args.severity, seed=args.seed)
    done = work / "inputs_done.json"
    if args.reuse and done.is_file() and json.loads(done.read_text())["generator"] == gcfg.model_dump(mode="json"):
        t_gen, t_proc = (json.loads(done.read_text())[k] for k in ("generate_wall_s", "process_wall_s"))
        print(f"reusing {gen} and {store}", file=sys.stderr)
    else:
        t0 = time.perf_counter()
        generate_dqm(gcfg, gen)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from lhcad.cli import main; main()", "-q", "process", "lumi",
                        "--fileset", str(gen / "fileset.json"), "--out", store, "--executor", "futures",
                        "--workers", str(args.workers)], check=True)
        t_proc = time.perf_counter() - t0
        done.write_text(json.dumps({"generator": gcfg.model_dump(mode="json"), "generate_wall_s": t_gen,
                                    "process_wall_s": t_proc}))
    truth = read_truth(gen / "truth.json")
    csv = str(gen / "lumi.csv")
    lumidata = load_lumidata(csv)
    reference = spread_reference(truth.good_runs, lumidata)
    cfg = DQMConfig(reference_runs=reference, epochs=args.epochs, false_flag_rate=args.false_flag_rate,
                    seed=args.seed)
    result: dict = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "n_runs": args.runs, "n_bad_runs": len(truth.bad_runs), "reference_runs": reference,
        "n_faulty_ls": len(truth.faults), "generate_wall_s": t_gen, "process_wall_s": t_proc, "models": {},
    }
    with open_cluster(ClusterConfig(type=args.executor, workers=args.workers)) as cluster:
        t0 = time.perf_counter()
        calib = workflow.train(store, work / "models", cfg, cluster)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        workflow.score(store, work / "models", cluster)
        t_score = time.perf_counter() - t0
    result["monitor_elements"] = calib["monitor_elements"]
    result["threshold_methods"] = sorted({c["method"] for c in calib["combined"].values()})
    first = next(iter(calib["models"][cfg.models[0]].values()))
    result["n_holdout_ls"] = first["n_holdout"]
    result["holdout_runs"], result["train_runs"] = first["holdout_runs"], first["train_runs"]
    for kind in cfg.models:
        rep = workflow.certify(store, work / "models", work / f"cert_{kind}", cfg.model_copy(update={"model": kind}),
                               lumi_csv=csv, max_plots=2)
        table = pd.read_csv(rep["artefacts"]["ls_table"]).to_dict("list")
        ev = evaluate(table, truth, reference, lumidata)
        rec, true = ev["recovered_lumi_bad_runs_pb"], ev["true_recoverable_lumi_pb"]
        ks = workflow.certify(store, work / "models", work / f"cert_{kind}_ks",
                              cfg.model_copy(update={"model": kind, "run_test": "ks"}), lumi_csv=csv, max_plots=0)
        comb = calib["combined"][kind]
        result["models"][kind] = {
            "ls_recall": ev["ls_recall"], "ls_recall_per_kind": ev["ls_recall_per_kind"],
            "n_faulty_ls_per_kind": ev["n_faulty_ls_per_kind"],
            "ls_false_flag_rate": ev["ls_false_flag_rate"], "n_good_ls_tested": ev["n_good_ls_tested"],
            "n_good_ls_flagged": ev["n_good_ls_flagged"], "ls_false_flag_rate_ci68": ev["ls_false_flag_rate_ci68"],
            "ls_false_flag_rate_upper95": ev["ls_false_flag_rate_upper95"],
            "false_flags_per_run": ev["false_flags_per_run"],
            "threshold_combined": {k: comb[k] for k in ("threshold", "method", "n_holdout", "holdout_flag_rate",
                                                        "confidence", "rate_upper", "order_statistic")},
            "clean_ls_of_bad_runs_flagged": ev["clean_ls_of_bad_runs_flagged"],
            "recovered_lumi_pb": rec, "true_recoverable_lumi_pb": true,
            "recovered_lumi_rel_diff": (rec - true) / true if true else None,
            "recovered_lumi_pb_recovered_verdict_runs": rep["lumi"]["recovered_pb"],
            "certified_lumi_pb": rep["lumi"]["certified_pb"],
            "verdicts": rep["verdicts"], "verdicts_per_me": rep["verdicts_per_me"],
            "bad_runs_verdicts": {str(r): rep["runs"][str(r)]["combined"]["verdict"] for r in sorted(truth.bad_runs)},
            "good_runs_verdicts": {str(r): rep["runs"][str(r)]["combined"]["verdict"] for r in sorted(truth.good_runs)},
            "run_test_ks": {
                "verdicts": ks["verdicts"],
                "bad_runs_verdicts": {str(r): ks["runs"][str(r)]["combined"]["verdict"] for r in sorted(truth.bad_runs)},
                "good_runs_verdicts": {str(r): ks["runs"][str(r)]["combined"]["verdict"] for r in sorted(truth.good_runs)},
                "recovered_lumi_pb": evaluate(pd.read_csv(ks["artefacts"]["ls_table"]).to_dict("list"), truth,
                                              reference, lumidata)["recovered_lumi_bad_runs_pb"],
            },
        }
    result["train_wall_s"], result["score_wall_s"] = t_train, t_score
    print(json.dumps(result, indent=1))
    for kind, m in result["models"].items():
        lo, hi = m["ls_false_flag_rate_ci68"]
        print(f"{kind:5s}: ls_recall {m['ls_recall']:.3f} {m['ls_recall_per_kind']}  "
              f"ls_false_flag_rate {m['ls_false_flag_rate']:.2e} = {m['n_good_ls_flagged']}/{m['n_good_ls_tested']} LS "
              f"(68 % CI {lo:.1e}-{hi:.1e}, 95 % upper {m['ls_false_flag_rate_upper95']:.1e})  "
              f"recovered {m['recovered_lumi_pb']:.2f} / true {m['true_recoverable_lumi_pb']:.2f} /pb", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()

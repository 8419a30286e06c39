"""Benchmark of the CMS EXO-22-026 dijet AD set on the generator's signal family, and complementarity.

Data: the lhcad dijet generator (:mod:`lhcad.generate.dijet`) makes QCD and signal events, the real
dijet processor (:class:`lhcad.processors.dijet.DijetProcessor`, run in memory on the generated
NanoAOD branches with a loose |Δη| < 2.6 so that the |Δη| > 1.4 sideband is kept) computes the
``dijet/`` columns, which are written into a Zarr store (:mod:`lhcad.store`) and read back by the
methods (:func:`lhcad.models.data.load_dijet`). Per signal type (all at M = 3.5 TeV, SR 3.3–3.7 TeV):

* ``data``: QCD over the m_jj range + the signal injected at S/B (SR, |Δη| < 1.3);
* ``test``: an independent labelled SR sample (QCD + that signal) every method is evaluated on;
* ``mc_bkg`` / ``mc_<signal>``: SR simulation for QUAK (background flow; signal prior = the *other*
  registered signal types, leave-one-out, so QUAK never sees the signal it is evaluated on) and for
  the supervised reference.

Methods: ``cwola`` (SR vs SB, LHCO features), ``cathode`` (LHCO features), ``cathode_b`` (+ DeepB of
both jets), ``vaeqr`` (per-jet VAE on |Δη| > 1.4, QR on |Δη| < 1.3), ``tagntrain``, ``quak``; plus
``supervised`` (reference, not in the combination) and QUAK with other cut slopes
(``quak_w0``: background loss only, ``quak_w0.5``; diagnostics, not in the combination).

Methods that train on data SR / SB events (cwola, the CATHODE classifiers, tagntrain) are 2-fold:
each data event is scored by the model that did not see it, test events by the mean of both models.

Complementarity: Pearson / Spearman / top-1 % overlap matrices on the background-only test events
and on test events with signal injected at the same S/B. Combinations of the five CMS methods
(cwola, tagntrain, cathode_b, quak, vaeqr), none using labels:

* ``stack`` (the combination the goal refers to): :class:`~lhcad.models.complementarity.StackedCombination`,
  monotone boosted trees trained CWoLa-style on data SR events vs ``mc_cal``, an independent
  background simulation of the SR (100 k events; never used to train a method), with each method's
  score calibrated to its background tail surprise on ``mc_cal``
  (:func:`~lhcad.models.complementarity.tail_surprise`); ``stack_free``: the same, unconstrained;
  ``fisher_cal``: the plain sum of those surprises.
* ``stack_sb``: the purely data-driven variant: percentiles within the data rows, data SR vs data SB.
  It is blind to signal that leaks into the sidebands: on the broad ``y_hh_4t`` (≈ 75 % of the
  injected events outside the SR) the methods that select *all* signal (Tag-N-Train, QUAK) show a
  smaller SR-over-SB excess than CWoLa, which keys on SR-only features, and the stack follows CWoLa.
* the fixed rank mean, rank max and Fisher combinations (percentiles from the unlabelled
  signal-injected test sample).

All are evaluated with the same SIC machinery (max SIC with ≥ 20 background events left and FPR ≥
1e-4); ``sic_cap`` is the largest max SIC that rule allows at the test size (200 k background events
in the full run: cap 100, so the best methods do not sit at it).

``background_at_efficiency``: the test background events passing the cut that keeps 50 % / 90 %
of the signal, which still ranks methods that sit at ``sic_cap``.

Run: ``python benchmarks/dijet_methods.py --json out.json [--quick] [--plots DIR] [--dump D.npz]``;
``--from-dump D.npz`` re-evaluates a dump's test scores (figures, correlations, combinations) in
seconds, without generating or training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = (3300.0, 3700.0)
MASS = 3500.0
SIGNALS = ("wprime_xy", "qstar_qwp", "wprime_bprime_t", "wkk_rw", "y_hh_4t")
PRIOR_EXTRA = ("x_yyprime", "zprime_tprime")      # registered signals used only in QUAK's prior
CMS_SET = ("cwola", "tagntrain", "cathode_b", "quak", "vaeqr")
METHODS = ("cwola", "cathode", "cathode_b", "vaeqr", "tagntrain", "quak")
QUAK_DIAGNOSTIC_WEIGHTS = (0.0, 0.5)
# combinations computed in Bench.stacked (the first is the one the goal refers to); the fixed
# COMBINATIONS of lhcad.models.complementarity are added in evaluate()
PRECOMPUTED = ("stack", "stack_free", "fisher_cal", "stack_sb")
FOLDS = 2                               # k-fold of the methods that train on data SR / SB events    # QUAK with other selection slopes, reported, never combined

SIZES = {
    "full": {"n_qcd": 150_000, "n_test_bkg": 200_000, "n_test_sig": 3_000, "n_mc_bkg": 15_000,
             "n_mc_sig": 2_000, "n_mc_cal": 100_000, "flow_epochs": 8, "flow_max_events": 15_000, "vae_epochs": 8,
             "hgb_members": 2},
    "quick": {"n_qcd": 40_000, "n_test_bkg": 4_000, "n_test_sig": 600, "n_mc_bkg": 3_000,
              "n_mc_sig": 400, "n_mc_cal": 6_000, "flow_epochs": 3, "flow_max_events": 5_000, "vae_epochs": 3,
              "hgb_members": 1},
}


# ------------------------------------------------------------------------------------------ data
def _process(block):
    import awkward as ak

    from lhcad.generate import dijet as phys
    from lhcad.processors.dijet import DijetProcessor

    ev = ak.zip(phys.to_branches(block, 1, 1), depth_limit=1)
    cols, _ = DijetProcessor(delta_eta_max=2.6, mjj_min=1200.0).compute(ev, {"dataset": "benchmark"})
    return cols


def _in_sr(cols):
    return (cols["mjj"] >= SR[0]) & (cols["mjj"] < SR[1]) & (cols["delta_eta"] < 1.3)


def _generate(rng, n, signal=None, sr_only=False, m_range=None):
    """Processed dijet columns of ``n`` events (``sr_only``: ``n`` events inside SR, |Δη| < 1.3)."""
    from lhcad.generate import dijet as phys

    if not sr_only:
        return _process(phys.make_block(rng, n, signal, m_range=m_range or phys.M_RANGE))
    parts, have = [], 0
    while have < n:
        cols = _process(phys.make_block(rng, 50_000, signal, m_range=m_range or phys.M_RANGE))
        sel = np.flatnonzero(_in_sr(cols))[: n - have]
        parts.append({k: v[sel] for k, v in cols.items()})
        have += len(sel)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build_store(path: str, sizes: dict, s_over_b: float, signals, seed: int = 7) -> dict:
    """Write every dataset of the benchmark into a new Zarr store; returns bookkeeping numbers."""
    from lhcad import store as _store
    from lhcad.generate.signals import get_signal

    rng = np.random.default_rng(seed)
    root = _store.open_store(path, mode="w")

    def write(name, cols, label):
        n = len(cols["mjj"])
        cols = {k: np.asarray(v) for k, v in cols.items()}
        cols["dataset"] = np.full(n, _store.dataset_code(root, "dijet", name), np.int8)
        cols["truth_label"] = np.full(n, label, np.int8)
        _store.append_columns(root, "dijet", cols)

    qcd = _generate(rng, sizes["n_qcd"], m_range=(2500.0, 5500.0))
    write("data", qcd, 0)
    n_sr_bkg = int(_in_sr(qcd).sum())
    info = {"n_data_qcd": len(qcd["mjj"]), "n_sr_background": n_sr_bkg, "injected": {}}
    write("test_bkg", _generate(rng, sizes["n_test_bkg"], sr_only=True, m_range=(3000.0, 4300.0)), 0)
    write("mc_bkg", _generate(rng, sizes["n_mc_bkg"], sr_only=True, m_range=(3000.0, 4300.0)), 0)
    for name in (*signals, *PRIOR_EXTRA):
        sig = get_signal(name, mass=MASS)
        if name in signals:
            n_s = int(round(s_over_b * n_sr_bkg))
            cols = _generate(rng, int(4 * n_s / 0.5) + 1000, sig)
            sr_idx = np.cumsum(_in_sr(cols))
            stop = int(np.searchsorted(sr_idx, n_s)) + 1          # shortest prefix with n_s SR events
            write(f"inject_{name}", {k: v[:stop] for k, v in cols.items()}, 1)
            info["injected"][name] = {"n_sr": n_s, "n_total": stop}
            write(f"test_{name}", _generate(rng, sizes["n_test_sig"], sig, sr_only=True), 1)
        write(f"mc_{name}", _generate(rng, sizes["n_mc_sig"], sig, sr_only=True), 1)
    # background simulation that calibrates the combination (never used to train a method); last,
    # so that the other samples do not change with its size
    write("mc_cal", _generate(rng, sizes["n_mc_cal"], sr_only=True, m_range=(3000.0, 4300.0)), 0)
    return info


# ------------------------------------------------------------------------------------------ methods
def _flow_params(sizes, seed):
    return {"flow": "maf", "transforms": 4, "hidden": (48, 48), "epochs": sizes["flow_epochs"],
            "batch_size": 512, "device": "cpu", "random_state": seed}


def _hgb(sizes, seed):
    return {"n_members": sizes["hgb_members"], "max_iter": 200, "random_state": seed}


class Bench:
    """All feature views of the store and the per-signal method runs."""

    def __init__(self, store: str, sizes: dict, seed: int = 0):
        from lhcad.models.cathode_b import CATHODE_B_FEATURES
        from lhcad.models.data import DEFAULT_FEATURES, load_dijet
        from lhcad.models.quak import QUAK_FEATURES
        from lhcad.models.vaeqr import per_jet_columns

        self.sizes, self.seed = sizes, seed
        self.views = {"lhco": load_dijet(store, DEFAULT_FEATURES), "lhco_b": load_dijet(store, CATHODE_B_FEATURES),
                      "jets": load_dijet(store, per_jet_columns()), "quak": load_dijet(store, QUAK_FEATURES),
                      "deta": load_dijet(store, ("delta_eta",))}
        d = self.views["lhco"]
        self.m = d.m
        self.deta = self.views["deta"].X[:, 0]
        self.ana = self.deta < 1.3
        self.in_sr = (self.m >= SR[0]) & (self.m < SR[1])
        self._quak_bkg = None

    def rows(self, name):
        return self.views["lhco"].rows(name) & np.all([v.finite for v in self.views.values()], axis=0)

    def run_signal(self, sig: str, signals) -> tuple[dict, dict]:
        """Fit every method on the data with ``sig`` injected; scores of the test rows + wall times."""
        from lhcad.models.cathode import CATHODE
        from lhcad.models.cwola import CWoLa
        from lhcad.models.flows import ConditionalFlow
        from lhcad.models.idealized import Supervised
        from lhcad.models.quak import QUAK, balanced_mixture
        from lhcad.models.tagntrain import TagNTrain
        from lhcad.models.vaeqr import VAEQR, sideband_rows

        sz, seed, m, V = self.sizes, self.seed, self.m, self.views
        data = self.rows("data") | self.rows(f"inject_{sig}")
        sr = data & self.ana & self.in_sr
        sb_cw = data & self.ana & ~self.in_sr & (m >= SR[0] - 300) & (m < SR[1] + 300)
        sb_flow = data & self.ana & ~self.in_sr & (m >= SR[0] - 800) & (m < SR[1] + 800)
        test = self.rows("test_bkg") | self.rows(f"test_{sig}")
        cal = self.rows("mc_cal")
        scores, wall = {}, {}

        def timed(name, fn):
            t0 = time.perf_counter()
            scores[name] = np.asarray(fn(), dtype=np.float64)
            wall[name] = time.perf_counter() - t0
            print(f"  {sig:16s} {name:10s} {wall[name]:6.1f} s", flush=True)

        X4, X6, XJ = V["lhco"].X, V["lhco_b"].X, V["jets"].X
        # Methods that train on data SR (and SB) events are 2-fold: the model of fold j never sees
        # fold-j rows and scores them; the test rows get the mean of both models (the single-method
        # figures). The stacked combination is trained on these out-of-fold data scores.
        fid = np.random.default_rng(seed + 31).integers(0, FOLDS, len(m))
        stack_rows = sr | sb_cw
        self.oof = {"rows": stack_rows, "sr": sr, "fold": fid, "scores": {}, "test_per_fold": {},
                    "cal_per_fold": {}}

        def folded(name, fit_fn, X):
            def run():
                oof, per_test, per_cal = np.full(len(m), np.nan), [], []
                for j in range(FOLDS):
                    est = fit_fn(fid != j)
                    held = stack_rows & (fid == j)
                    oof[held] = est.score_samples(X[held])
                    per_test.append(np.asarray(est.score_samples(X[test]), dtype=np.float64))
                    per_cal.append(np.asarray(est.score_samples(X[cal]), dtype=np.float64))
                self.oof["scores"][name] = oof
                self.oof["test_per_fold"][name] = per_test
                self.oof["cal_per_fold"][name] = per_cal
                return np.mean(per_test, axis=0)
            timed(name, run)

        folded("cwola", lambda tr: CWoLa("hgb", _hgb(sz, seed)).fit(X4[sr & tr], X4[sb_cw & tr]), X4)

        sb_rows = np.flatnonzero(sb_flow)
        if len(sb_rows) > sz["flow_max_events"]:
            sb_rows = np.sort(np.random.default_rng(seed).choice(sb_rows, sz["flow_max_events"], replace=False))

        def cathode(name, X, bounds):
            # one sideband flow for both folds (it never sees SR events); the SR classifier is folded
            t0 = time.perf_counter()
            flow = ConditionalFlow(**_flow_params(sz, seed)).fit(X[sb_rows], m[sb_rows], bounds=bounds)
            wall_flow = time.perf_counter() - t0

            def fit(tr):
                est = CATHODE("hgb", _hgb(sz, seed), oversample=4, random_state=seed)
                return est.fit(X[sr & tr], m[sr & tr], background_flow=flow)
            folded(name, fit, X)
            wall[name] += wall_flow

        cathode("cathode", X4, V["lhco"].bounds())
        cathode("cathode_b", X6, V["lhco_b"].bounds())
        vae = {"epochs": sz["vae_epochs"], "device": "cpu", "batch_size": 512}
        # VAE-QR trains its VAE on the |Δη| > 1.4 sideband (disjoint from the SR/SB rows below) and
        # fits only a 1-D loss quantile vs m_jj on the analysis rows: not folded.
        vaeqr = VAEQR(vae_params=vae, random_state=seed)
        timed("vaeqr", lambda: vaeqr.fit(XJ[data], m[data], sideband=sideband_rows(self.deta[data]),
                                         qr_rows=self.ana[data]).score_samples(XJ[test], m[test]))
        rows = np.flatnonzero(stack_rows)
        self.oof["scores"]["vaeqr"] = np.full(len(m), np.nan)
        self.oof["scores"]["vaeqr"][rows] = vaeqr.score_samples(XJ[rows], m[rows])
        self.oof["cal_per_fold"]["vaeqr"] = [vaeqr.score_samples(XJ[cal], m[cal])] * FOLDS
        folded("tagntrain", lambda tr: TagNTrain(ae_params=vae, classifier_params=_hgb(sz, seed),
                                                 random_state=seed).fit(XJ[sr & tr]), XJ)
        XQ = V["quak"].X
        bounds_q = V["quak"].bounds()
        if self._quak_bkg is None:
            mc = self.rows("mc_bkg")
            t0 = time.perf_counter()
            self._quak_bkg = ConditionalFlow(**_flow_params(sz, seed)).fit(XQ[mc], m[mc], bounds=bounds_q)
            self._quak_bkg_wall = time.perf_counter() - t0
        prior = [s for s in (*signals, *PRIOR_EXTRA) if s != sig]
        Xs, ms = balanced_mixture([(XQ[self.rows(f"mc_{p}")], m[self.rows(f"mc_{p}")]) for p in prior],
                                  random_state=seed)
        quak = QUAK(_flow_params(sz, seed + 5), signal_weight=1.0, random_state=seed)
        timed("quak", lambda: quak.fit(None, None, Xs, ms, bounds=bounds_q, background_flow=self._quak_bkg)
              .score_samples(XQ[test], m[test]))
        self.oof["scores"]["quak"] = np.full(len(m), np.nan)       # trained on simulation only
        self.oof["scores"]["quak"][rows] = quak.score_samples(XQ[rows], m[rows])
        self.oof["cal_per_fold"]["quak"] = [quak.score_samples(XQ[cal], m[cal])] * FOLDS
        wall["quak"] += self._quak_bkg_wall / len(signals)   # the shared background flow, amortised
        # diagnostics (not in the method set): other slopes of the cut line in QUAK space
        L = quak.losses(XQ[test], m[test])
        for w in QUAK_DIAGNOSTIC_WEIGHTS:
            scores[f"quak_w{w:g}"] = L[:, 0] - w * L[:, 1]
        mcb, mcs = self.rows("mc_bkg"), self.rows(f"mc_{sig}")
        timed("supervised", lambda: Supervised("hgb", _hgb(sz, seed)).fit(X6[mcs], X6[mcb]).score_samples(X6[test]))
        labels = self.views["lhco"].truth[test] > 0
        t0 = time.perf_counter()
        scores.update(self.stacked(scores))
        wall["stack"] = time.perf_counter() - t0
        return {"scores": scores, "labels": labels}, wall

    def stacked(self, scores: dict) -> dict:
        """The data-driven combinations of the CMS set (no labels), applied to the test rows.

        ``stack`` / ``stack_free``: :class:`StackedCombination` (monotone / unconstrained) trained on
        data SR events vs the background simulation ``mc_cal`` (a background template: pure
        background, so the CWoLa optimum is monotone in signal/background for any signal shape).
        Inputs are background tail surprises (:func:`tail_surprise`) calibrated on the fold-j
        models' ``mc_cal`` scores; a data SR row is scored by the fold model that did not see it,
        the test rows once per fold model and the outputs averaged. ``fisher_cal``: the sum of those
        surprises (no learning). ``stack_sb``: the purely data-driven variant: percentiles within the
        data rows, SR vs SB data (blind to signal that leaks into the sidebands)."""
        from lhcad.models.complementarity import StackedCombination, normalise, tail_surprise

        o = self.oof
        rows, fid = o["rows"], o["fold"]
        sr = o["sr"] & rows

        def per_fold(k, j):
            return o["test_per_fold"][k][j] if k in o["test_per_fold"] else scores[k]

        U_sr, U_cal, U_test = [], [], []
        for j in range(FOLDS):
            held = sr & (fid == j)
            cal = [o["cal_per_fold"][k][j] for k in CMS_SET]
            U_sr.append(np.column_stack([tail_surprise(o["scores"][k][held], c) for k, c in zip(CMS_SET, cal)]))
            U_cal.append(np.column_stack([tail_surprise(c, c) for c in cal]))
            U_test.append(np.column_stack([tail_surprise(per_fold(k, j), c) for k, c in zip(CMS_SET, cal)]))
        out = {}
        for name, mono in (("stack", True), ("stack_free", False)):
            st = StackedCombination(monotone=mono, random_state=self.seed).fit(np.concatenate(U_sr),
                                                                               np.concatenate(U_cal))
            out[name] = np.mean([st.score_samples(U) for U in U_test], axis=0)
        out["fisher_cal"] = np.mean([U.sum(axis=1) for U in U_test], axis=0)

        # data only: each fold model's scores become percentiles within the data rows it scored
        P = np.full((len(fid), len(CMS_SET)), np.nan)
        P_test = []
        for j in range(FOLDS):
            cols = []
            for c, k in enumerate(CMS_SET):
                s = o["scores"][k]
                ref = s[rows & (fid == j)] if k in o["test_per_fold"] else s[rows]
                held = rows & (fid == j)
                P[held, c] = normalise(s[held], ref)
                cols.append(normalise(per_fold(k, j), ref))
            P_test.append(np.column_stack(cols))
        st = StackedCombination(monotone=True, random_state=self.seed).fit(P[sr], P[rows & ~sr])
        out["stack_sb"] = np.mean([st.score_samples(Pt) for Pt in P_test], axis=0)

        self.stack_inputs = {
            "P_sr": P[sr], "P_sb": P[rows & ~sr], **{f"P_test{j}": p for j, p in enumerate(P_test)},
            "raw": np.column_stack([o["scores"][k][rows] for k in CMS_SET]), "raw_sr": sr[rows],
            "raw_fold": fid[rows],
            **{f"raw_test{j}": np.column_stack([per_fold(k, j) for k in CMS_SET]) for j in range(FOLDS)},
            **{f"raw_cal{j}": np.column_stack([o["cal_per_fold"][k][j] for k in CMS_SET]) for j in range(FOLDS)}}
        return out


# ------------------------------------------------------------------------------------------ report
EFFICIENCIES = (0.5, 0.9)


def background_at_efficiency(y, s, efficiencies=EFFICIENCIES) -> dict:
    """Test background events that pass the cut keeping each signal efficiency: a figure that still
    separates methods where max SIC sits at ``sic_cap`` (0 = no background event passes)."""
    y, s = np.asarray(y, bool), np.asarray(s, dtype=np.float64)
    return {f"{e:g}": int((s[~y] >= np.quantile(s[y], 1.0 - e)).sum()) for e in efficiencies}


def load_dump(path: Path) -> dict:
    """``{signal: {"scores", "labels"}}`` from a ``--dump`` file (re-evaluate without re-training)."""
    D = np.load(path)
    sigs = list(dict.fromkeys(k.split("/")[0] for k in D.files if k.endswith("/labels")))
    return {s: {"labels": D[f"{s}/labels"],
                "scores": {k[len(s) + 7:]: D[k] for k in D.files if k.startswith(f"{s}/score_")}} for s in sigs}


def evaluate(results: dict, s_over_b: float, seed: int, plots: Path | None) -> dict:
    from lhcad.models.complementarity import COMBINATIONS, combine, correlation_matrices, plot_matrix
    from lhcad.models.metrics import plot_sic, sic_summary

    extra = ("supervised", *(f"quak_w{w:g}" for w in QUAK_DIAGNOSTIC_WEIGHTS))
    combos = (*PRECOMPUTED, *COMBINATIONS)
    out = {"max_sic": {k: {} for k in (*METHODS, *extra)}, "auc": {k: {} for k in (*METHODS, *extra)},
           "combination_sic": {c: {} for c in combos}, "combination_auc": {c: {} for c in combos},
           "correlations": {}, "plots": [], "background_at_efficiency": {}}
    bae = out["background_at_efficiency"]
    rng = np.random.default_rng(seed)
    for sig, r in results.items():
        y, S = r["labels"], r["scores"]
        for k, s in S.items():
            if k in PRECOMPUTED:
                continue
            summ = sic_summary(y, s)
            out["max_sic"][k][sig] = summ["max_sic"]
            out["auc"][k][sig] = summ["auc"]
            bae.setdefault(k, {})[sig] = background_at_efficiency(y, s)
        out["rule"] = summ["rule"]
        out["sic_cap"] = summ["fpr_floor"] ** -0.5        # the largest max SIC the rule allows
        out["n_test"] = {"background": summ["n_bkg"], "signal": summ["n_sig"]}
        # signal-injected test sample at the benchmark S/B (unlabelled reference for the percentiles)
        bkg, sigi = np.flatnonzero(~y), np.flatnonzero(y)
        inj = np.r_[bkg, rng.choice(sigi, min(len(sigi), int(round(s_over_b * len(bkg)))), replace=False)]
        methods = {k: S[k] for k in METHODS}
        out["correlations"][sig] = {"background_only": correlation_matrices({k: s[bkg] for k, s in methods.items()}),
                                    "signal_injected": correlation_matrices({k: s[inj] for k, s in methods.items()})}
        cms = {k: S[k] for k in CMS_SET}
        ref = {k: s[inj] for k, s in cms.items()}
        curves = {k: (y, S[k]) for k in CMS_SET}
        for c in combos:
            comb = S[c] if c in PRECOMPUTED else combine(cms, c, reference=ref)
            summ = sic_summary(y, comb)
            out["combination_sic"][c][sig] = summ["max_sic"]
            out["combination_auc"][c][sig] = summ["auc"]
            bae.setdefault(f"comb:{c}", {})[sig] = background_at_efficiency(y, comb)
            curves[f"comb. {c}"] = (y, comb)
        if plots is not None:
            plots.mkdir(parents=True, exist_ok=True)
            out["plots"].append(plot_sic(curves, plots / f"sic_{sig}.png", f"{sig} (M = {MASS:g} GeV)"))
            cm = out["correlations"][sig]["signal_injected"]
            out["plots"].append(plot_matrix(cm["spearman"], cm["methods"], plots / f"spearman_{sig}.png",
                                            f"Spearman, {sig} injected"))
            out["plots"].append(plot_matrix(cm["top_overlap"], cm["methods"], plots / f"overlap_{sig}.png",
                                            f"top-1% overlap, {sig} injected", vmin=0.0, vmax=1.0))
    # goals
    sigs = list(results)
    best = {s: max(CMS_SET, key=lambda k: out["max_sic"][k][s]) for s in sigs}
    best_all = {s: max(METHODS, key=lambda k: out["max_sic"][k][s]) for s in sigs}
    ratio = {c: {s: out["combination_sic"][c][s] / out["max_sic"][best[s]][s] for s in sigs} for c in combos}
    out["goals"] = {
        "beats_random": {k: max(out["max_sic"][k].values()) > 2 for k in METHODS},
        "best_cms_method": best,
        "best_method": best_all,
        "no_single_best": len(set(best.values())) > 1,
        "combination_over_best": ratio,
        "combination_within_10pct": {c: all(v >= 0.9 for v in ratio[c].values()) for c in combos},
        "combination": "stack",
        "stack_within_10pct": all(v >= 0.9 for v in ratio["stack"].values()),
    }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--quick", action="store_true", help="small samples and few epochs (smoke run)")
    ap.add_argument("--signals", default=",".join(SIGNALS), help="comma-separated signal names (≥ 4 for the goals)")
    ap.add_argument("--s-over-b", type=float, default=0.03, help="injected S/B in the SR (|Δη| < 1.3)")
    ap.add_argument("--store", help="Zarr store path (default: a temporary directory)")
    ap.add_argument("--plots", type=Path, help="write SIC curves and correlation matrices here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump", type=Path, help="also save the stacking inputs + test scores/labels (.npz) here")
    ap.add_argument("--from-dump", type=Path, help="re-evaluate the test scores of a --dump file (no training)")
    args = ap.parse_args(argv)
    if args.from_dump:
        try:
            results = load_dump(args.from_dump)
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: cannot read dump {args.from_dump}: {exc}", file=sys.stderr)
            return 2
        out = evaluate(results, args.s_over_b, args.seed, args.plots)
        out.update({"signals": list(results), "mass": MASS, "sr": list(SR), "s_over_b": args.s_over_b,
                    "cms_set": list(CMS_SET), "from_dump": str(args.from_dump)})
        _print(out)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=float))
        return 0

    from lhcad.generate.common import GenerateError
    from lhcad.generate.signals import get_signal

    signals = tuple(s for s in args.signals.split(",") if s)
    try:
        for s in signals:
            get_signal(s)
    except GenerateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    sizes = SIZES["quick" if args.quick else "full"]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "bench.zarr")
        t0 = time.perf_counter()
        info = build_store(store, sizes, args.s_over_b, signals, seed=args.seed + 7)
        gen_wall = time.perf_counter() - t0
        print(f"generated + processed in {gen_wall:.1f} s: {info['n_sr_background']} SR background events, "
              f"S/B = {args.s_over_b}", flush=True)
        bench = Bench(store, sizes, seed=args.seed)
        results, wall, dump = {}, {}, {}
        for sig in signals:
            results[sig], w = bench.run_signal(sig, signals)
            if args.dump:
                dump.update({f"{sig}/{k}": v for k, v in bench.stack_inputs.items()})
                dump.update({f"{sig}/score_{k}": v for k, v in results[sig]["scores"].items()})
                dump[f"{sig}/labels"] = results[sig]["labels"]
            for k, v in w.items():
                wall.setdefault(k, {})[sig] = v
    if args.dump:
        np.savez_compressed(args.dump, **dump)
    out = evaluate(results, args.s_over_b, args.seed, args.plots)
    out.update({"signals": list(signals), "mass": MASS, "sr": list(SR), "s_over_b": args.s_over_b,
                "quick": args.quick, "sizes": sizes, "data": info, "wall_s": wall, "generate_wall_s": gen_wall,
                "total_wall_s": time.perf_counter() - t_start, "cms_set": list(CMS_SET),
                "torch_threads": args.threads})
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


def _print(out: dict) -> None:
    sigs = out["signals"]
    rows = [*out["max_sic"], *(f"comb:{c}" for c in out["combination_sic"])]
    print(f"\nmax SIC ({out['rule']}; cap {out['sic_cap']:.1f}, {out['n_test']['background']} test background "
          f"events), S/B = {out['s_over_b']}")
    print(f"{'method':16s}" + "".join(f"{s[:14]:>15s}" for s in sigs))
    for k in rows:
        vals = out["combination_sic"][k[5:]] if k.startswith("comb:") else out["max_sic"][k]
        print(f"{k:16s}" + "".join(f"{vals[s]:15.2f}" for s in sigs))
    g = out["goals"]
    print(f"best CMS method per signal: {g['best_cms_method']}")
    print(f"beats random (max SIC > 2 on ≥ 1 signal): {g['beats_random']}")
    print(f"combination / best: { {c: {s: round(v, 2) for s, v in r.items()} for c, r in g['combination_over_best'].items()} }")
    print(f"combination '{g['combination']}' within 10 % of the best CMS method on every signal: "
          f"{g['stack_within_10pct']}")
    print("test background events passing at signal efficiency " + ", ".join(f"{e:g}" for e in EFFICIENCIES) + ":")
    for k, v in out["background_at_efficiency"].items():
        print(f"  {k:16s}" + "".join(f"{'/'.join(str(n) for n in v[s].values()):>15s}" for s in sigs))
    if "total_wall_s" in out:
        print(f"total wall {out['total_wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())

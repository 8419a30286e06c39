"""The run procedure: flag LSs, remove them, test what is left, certify → golden JSON.

For every monitor element (ME) and run:

1. an LS is **flagged** when its score is at or above the ME's threshold; an LS with fewer than
   ``min_entries`` entries is marked **low_stats** (reported; certified or not per ``low_stats``
   policy, ``"exclude"`` by default — never silently dropped);
2. the flagged (and excluded) LSs are removed and the counts of the remaining LSs are summed into one
   run-level histogram;
3. that histogram is compared with the GOOD reference by a **χ² test** (default) or a binned
   **Kolmogorov-Smirnov test** (``run_test: ks``; :func:`run_test`, both documented there). The
   reference is *conditions-matched*: pile-up changes the MEs' shapes within and between runs, so
   every kept LS is represented by the mean shape of the ``k`` reference LSs with the closest average
   pile-up (the brilcalc CSV's ``avgpu``; without a CSV, the closest number of entries, ∝ luminosity
   for a fixed trigger), scaled to the LS's entries; the variance of that expectation from the
   reference's own Poisson fluctuations is included exactly. An optional relative systematic per bin
   widens it;
4. verdict: **BAD** if no LS remains, more than ``max_flagged_fraction`` of the LSs are flagged or the
   test's p-value is below ``alpha``; otherwise **RECOVERED** if any LS was flagged, else **GOOD**.

The **combined** verdict uses every ME at once: an LS is removed if any ME flags it at that ME's
combined threshold (calibrated jointly over the MEs so that the rate of LSs flagged by any ME is the
target, :func:`lhcad.dqm.calibrate.calibrate_combined`) or is low-stats in any ME; the remaining LSs are tested in every ME at
``alpha / n_ME``. The certified LSs of GOOD and RECOVERED runs form the golden JSON
(``{"run": [[first, last], ...]}``, the format ``coffea.lumi_tools.LumiMask`` reads).

>>> to_golden({297050: [1, 2, 3, 7, 8], 297056: [4]})
{'297050': [[1, 3], [7, 8]], '297056': [[4, 4]]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

VERDICTS = ("GOOD", "RECOVERED", "BAD")


@dataclass
class MEScores:
    """Per-LS scores of one ME with what certification needs."""

    me: str
    run: np.ndarray
    lumi: np.ndarray
    counts: np.ndarray  # (n_LS, n_bins)
    score: np.ndarray  # (n_LS,)
    threshold: float  # at false_flag_rate (per-ME verdicts)
    threshold_combined: float  # joint calibration over the MEs (combined verdict)
    reference: np.ndarray  # (n_ref, n_bins) counts of the GOOD reference LSs
    cond: np.ndarray | None = None  # (n_LS,) pile-up per LS (brilcalc avgpu); None: use entries
    ref_cond: np.ndarray | None = None  # (n_ref,) the same for the reference LSs


@dataclass
class RunVerdict:
    run: int
    verdict: str
    n_ls: int
    flagged: list[int] = field(default_factory=list)
    low_stats: list[int] = field(default_factory=list)
    certified: list[int] = field(default_factory=list)
    chi2: dict[str, float] = field(default_factory=dict)  # per ME: the run test's statistic (χ² or KS D)
    ndf: dict[str, int] = field(default_factory=dict)  # χ² ndf, or the KS effective size
    p_value: dict[str, float] = field(default_factory=dict)
    n_tested: dict[str, int] = field(default_factory=dict)  # LSs in the run test (reference covers them)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CertifyOptions:
    min_entries: int = 20
    low_stats: str = "exclude"  # or "keep"
    alpha: float = 1e-3
    syst: float = 0.0
    max_flagged_fraction: float = 0.5
    test: str = "chi2"  # or "ks" (see run_test)


def matched_reference(entries: np.ndarray, reference: np.ndarray, k: int = 20, cond: np.ndarray | None = None,
                      ref_cond: np.ndarray | None = None, tolerance: float | None = 0.05,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected counts, their variance and the matched-LS mask, from the ``k`` reference LSs nearest in ``cond``.

    An LS whose ``k`` neighbours are not all within ``tolerance`` (relative) of its conditions is not
    matched (the reference does not cover it) and does not enter the expectation.

    ``cond`` / ``ref_cond`` are the conditions (pile-up) of the LSs and of the reference LSs; without
    them the entries themselves are matched. With pile-up, the neighbours below and above the LS's
    pile-up are weighted so that their mean pile-up equals the LS's (linear interpolation); an LS the
    neighbours do not bracket is not matched. ``E_b = Σ_j w_j c_jb`` with ``w_j = Σ_i N_i ω_ij / N_j``
    (``ω_ij`` the neighbour weights of LS ``i``, summing to 1); ``Var E_b = Σ_j w_j² c_jb`` (Poisson).
    """
    ref = np.asarray(reference, float)
    n_ref = ref.sum(axis=1)
    entries = np.asarray(entries, float)
    x_ref = n_ref if cond is None or ref_cond is None else np.asarray(ref_cond, float)
    x = entries if cond is None or ref_cond is None else np.asarray(cond, float)
    ok = n_ref > 0
    ref, n_ref, x_ref = ref[ok], n_ref[ok], x_ref[ok]
    order = np.argsort(x_ref, kind="stable")
    ref, n_ref, x_ref = ref[order], n_ref[order], x_ref[order]
    k = max(1, min(k, len(x_ref)))
    w = np.zeros(len(x_ref))
    matched = np.zeros(len(entries), bool)
    for i, (n_i, x_i, p) in enumerate(zip(entries, x, np.searchsorted(x_ref, x))):
        cand = np.arange(max(0, p - k), min(len(x_ref), p + k))
        pick = cand[np.argsort(np.abs(x_ref[cand] - x_i), kind="stable")[:k]]
        if tolerance is not None and np.abs(x_ref[pick] - x_i).max() > tolerance * max(abs(x_i), 1e-9):
            continue  # conditions the reference does not cover: this LS cannot be tested
        lo, hi = pick[x_ref[pick] <= x_i], pick[x_ref[pick] > x_i]
        if cond is not None and ref_cond is not None:
            # bracket the LS's pile-up and weight the two sides so that the mean pile-up matches
            # (linear interpolation in pile-up; one-sided neighbours at the edges would bias the shape)
            if len(lo) == 0 or len(hi) == 0:
                if np.ptp(x_ref[pick]) > 0 or x_ref[pick[0]] != x_i:
                    continue
                lo, hi = pick, pick[:0]
            m_lo, m_hi = x_ref[lo].mean(), (x_ref[hi].mean() if len(hi) else x_i)
            a = 1.0 if len(hi) == 0 or m_hi == m_lo else (m_hi - x_i) / (m_hi - m_lo)
            weights = np.concatenate([np.full(len(lo), a / len(lo)), np.full(len(hi), (1 - a) / max(len(hi), 1))])
            pick = np.concatenate([lo, hi])
        else:
            weights = np.full(len(pick), 1.0 / len(pick))
        matched[i] = True
        np.add.at(w, pick, n_i * weights / n_ref[pick])
    return w @ ref, (w ** 2) @ ref, matched


def run_test(counts: np.ndarray, reference: np.ndarray, syst: float = 0.0, k: int = 20,
             cond: np.ndarray | None = None, ref_cond: np.ndarray | None = None,
             tolerance: float | None = 0.05, test: str = "chi2") -> tuple[float, int, float, int]:
    """Test a run's kept LSs (``counts`` (n_LS, n_bins)) against the conditions-matched reference.

    The observed run-level histogram ``n_b`` (summed over the LSs whose conditions the reference
    covers) is compared with the expectation ``E_b`` of :func:`matched_reference` (variance ``V_b``):

    ``test="chi2"``: ``χ² = Σ_b (n_b − E_b)² / (E_b + V_b + (syst · E_b)² + 1)`` over bins with
    ``E_b + n_b > 0`` (the ``+ 1`` regularises bins the reference barely populates), ``ndf`` = those
    bins − 1 (the expectation has the run's total); p from the χ² distribution. Sensitive to any
    bin, including isolated spikes (hot channels).

    ``test="ks"``: binned two-sample Kolmogorov-Smirnov, ``D = max_b |F_n(b) − F_E(b)|`` of the
    cumulative fractions in bin order. The reference's size is its effective number of entries
    ``m = (Σ E)² / Σ (V_b + (syst · E_b)²)`` (its Poisson fluctuations and the systematic both shrink
    it), ``n_eff = n m / (n + m)``; p = ``scipy.stats.kstwo.sf(D, n_eff)``. Binning makes it
    conservative (p-values larger than for unbinned data). Sensitive to shifts of the bulk (scale,
    pile-up), blind to a change that keeps the cumulative shape (e.g. one hot bin among many). For
    multi-dimensional MEs it uses the flattened (row-major) bin order — use χ² for those. Returns
    ``(D, n_eff, p, n_tested)``.

    Returns (statistic, ndf or n_eff, p-value, number of LSs tested); no LS covered → (nan, 0, nan, 0).
    """
    if test not in ("chi2", "ks"):
        raise ValueError(f"run_test: test must be 'chi2' or 'ks', got {test!r}")
    counts = np.asarray(counts, float)
    if counts.size == 0 or counts.sum() <= 0:
        return float("nan"), 0, float("nan"), 0
    exp, var, matched = matched_reference(counts.sum(axis=1), reference, k, cond, ref_cond, tolerance)
    if not matched.any():
        return float("nan"), 0, float("nan"), 0
    obs = counts[matched].sum(axis=0)
    if test == "ks":
        n = obs.sum()
        m = exp.sum() ** 2 / max(float((var + (syst * exp) ** 2).sum()), 1e-12)
        d = float(np.abs(np.cumsum(obs) / n - np.cumsum(exp) / exp.sum()).max())
        n_eff = max(1, int(round(n * m / (n + m))))
        return d, n_eff, float(stats.kstwo.sf(d, n_eff)), int(matched.sum())
    ok = (exp + obs) > 0
    chi2 = float(((obs[ok] - exp[ok]) ** 2 / (exp[ok] + var[ok] + (syst * exp[ok]) ** 2 + 1.0)).sum())
    ndf = int(ok.sum() - 1)
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else 1.0, int(matched.sum())


def to_golden(certified: dict[int, list[int]]) -> dict[str, list[list[int]]]:
    """``{run: [LS, ...]}`` → golden JSON ranges ``{"run": [[first, last], ...]}`` (runs with no LS left out)."""
    out: dict[str, list[list[int]]] = {}
    for run in sorted(certified):
        ls = sorted(int(x) for x in set(certified[run]))
        if not ls:
            continue
        ranges = [[ls[0], ls[0]]]
        for x in ls[1:]:
            if x == ranges[-1][1] + 1:
                ranges[-1][1] = x
            else:
                ranges.append([x, x])
        out[str(int(run))] = ranges
    return out


def write_golden(golden: dict, path: str | Path) -> Path:
    """Write a golden JSON in the CMS layout (one run per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'  "{run}": {json.dumps(ranges)}' for run, ranges in golden.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return path


def _verdict(run, lumi, removed, flagged, low, kept, tests, alpha, max_frac) -> RunVerdict:
    v = RunVerdict(int(run), "GOOD", len(lumi), [int(x) for x in lumi[flagged]], [int(x) for x in lumi[low]])
    for me, (chi2, ndf, p, n_t) in tests.items():
        v.chi2[me], v.ndf[me], v.p_value[me], v.n_tested[me] = chi2, ndf, p, n_t
    tests = {me: t for me, t in tests.items() if t[3] > 0}
    frac = float(flagged.mean()) if len(flagged) else 0.0
    if not kept.any():
        v.verdict, v.reason = "BAD", "no LS left after removing flagged/low-stats LSs"
    elif frac > max_frac:
        v.verdict, v.reason = "BAD", f"{frac:.0%} of LSs flagged (> {max_frac:.0%})"
    elif any(t[2] < alpha for t in tests.values()):
        worst = min(tests, key=lambda m: tests[m][2])
        v.verdict, v.reason = "BAD", f"remaining run differs from reference in {worst} (p = {tests[worst][2]:.2e})"
    elif flagged.any():
        v.verdict, v.reason = "RECOVERED", f"{int(flagged.sum())} LS(s) flagged and removed"
    if v.verdict != "BAD" and not tests:
        v.reason = (v.reason + "; " if v.reason else "") + "no run test: the reference does not cover this run's pile-up"
    if v.verdict != "BAD":
        v.certified = [int(x) for x in lumi[kept]]
    return v


def certify_me(s: MEScores, opts: CertifyOptions) -> dict[int, RunVerdict]:
    """Per-run verdicts of one ME (threshold at the target false-flag rate, test at ``alpha``)."""
    out = {}
    entries = s.counts.sum(axis=1)
    for run in np.unique(s.run):
        rows = s.run == run
        flagged = s.score[rows] >= s.threshold
        low = (entries[rows] < opts.min_entries) & ~flagged
        kept = ~flagged & (~low if opts.low_stats == "exclude" else True)
        cond = None if s.cond is None else s.cond[rows][kept]
        tests = {s.me: run_test(s.counts[rows][kept], s.reference, opts.syst, cond=cond, ref_cond=s.ref_cond,
                                test=opts.test)} if kept.any() else {}
        out[int(run)] = _verdict(run, s.lumi[rows], ~kept, flagged, low, kept, tests, opts.alpha,
                                 opts.max_flagged_fraction)
    return out


def align(scores: list[MEScores]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Union of (run, LS) over MEs: (run, lumi, per-ME row index or -1 where the ME lacks that LS)."""
    keys = np.unique(np.concatenate([s.run * (1 << 32) + s.lumi for s in scores]))
    idx = []
    for s in scores:
        k = s.run * (1 << 32) + s.lumi
        pos = np.searchsorted(keys, k)
        row = np.full(len(keys), -1, np.int64)
        row[pos] = np.arange(len(k))
        idx.append(row)
    return keys >> 32, keys & 0xFFFFFFFF, idx


def certify_combined(scores: list[MEScores], opts: CertifyOptions) -> tuple[dict[int, RunVerdict], dict]:
    """Combined verdicts over all MEs; also returns the per-LS table (run, lumi, flags per ME)."""
    run, lumi, idx = align(scores)
    n_me = len(scores)
    flag_any = np.zeros(len(run), bool)
    low_any = np.zeros(len(run), bool)
    table: dict = {"run": run, "lumi": lumi}
    for s, row in zip(scores, idx):
        have = row >= 0
        sc = np.full(len(run), np.nan)
        sc[have] = s.score[row[have]]
        ent = np.zeros(len(run))
        ent[have] = s.counts[row[have]].sum(axis=1)
        fl = np.nan_to_num(sc, nan=-np.inf) >= s.threshold_combined
        table[f"score/{s.me}"], table[f"entries/{s.me}"], table[f"flagged/{s.me}"] = sc, ent, fl
        flag_any |= fl
        low_any |= ent < opts.min_entries
    low_any &= ~flag_any
    table["flagged"], table["low_stats"] = flag_any, low_any
    certified = np.zeros(len(run), bool)
    out = {}
    for r in np.unique(run):
        rows = np.flatnonzero(run == r)
        flagged, low = flag_any[rows], low_any[rows]
        kept = ~flagged & (~low if opts.low_stats == "exclude" else True)
        tests = {}
        if kept.any():
            for s, row in zip(scores, idx):
                sel = row[rows][kept]
                sel = sel[sel >= 0]
                tests[s.me] = run_test(s.counts[sel], s.reference, opts.syst,
                                       cond=None if s.cond is None else s.cond[sel], ref_cond=s.ref_cond,
                                       test=opts.test)
        v = _verdict(r, lumi[rows], ~kept, flagged, low, kept, tests, opts.alpha / n_me, opts.max_flagged_fraction)
        out[int(r)] = v
        if v.verdict != "BAD":
            certified[rows[kept]] = True
    table["certified"] = certified
    return out, table


def verdict_counts(verdicts: dict[int, RunVerdict]) -> dict[str, int]:
    return {k: sum(v.verdict == k for v in verdicts.values()) for k in VERDICTS}

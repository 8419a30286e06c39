"""Registry of the dijet resonance signals ``A → B C`` (CMS EXO-22-026 family + the LHCO benchmark).

Each signal is a heavy resonance A decaying to two boosted objects B and C, each reconstructed as one
AK8 jet. A daughter is described by a *pattern* rather than by a parton shower:

``prongs``
    number of hard partons inside the jet. It sets the N-subjettiness ratios: τ_N/τ_{N-1} is small
    (≈0.28) for N = prongs, grows by 0.16 per unresolved extra prong for N < prongs, and is QCD-like
    for N > prongs (see :func:`lhcad.generate.dijet.substructure`). ``prongs = 1`` is a light-quark
    jet whose mass follows the QCD Sudakov model.
``b``
    number of b quarks in the jet; any b content gives a b-like ``btagDeepB`` (Kumaraswamy(5, 1.2), mean 0.81).
``lepton_fraction``
    probability that a decay inside the jet is leptonic (t → bℓν, Z → ℓℓ/νν): such jets get a high
    lepton subjet fraction ``lsf3`` (Kumaraswamy(7, 1.2), mean 0.86) and add a neutrino to the missing pT.
``mass``
    the daughter's mass in GeV (``None`` for a light quark, whose mass is QCD-like).

The default masses follow the benchmarks: the LHC Olympics 2020 R&D signal W'(3.5 TeV) → X(500 GeV)
Y(100 GeV) with X, Y → qq, and representative points of the EXO-22-026 signal models. ``M_A`` and
the daughter masses are parameters (:func:`get_signal` with ``mass=`` / ``daughter_masses=``).

>>> get_signal("wprime_xy").mass
3500.0
>>> [d.prongs for d in get_signal("y_hh_4t").daughters]
[6, 6]
>>> get_signal("nope")
Traceback (most recent call last):
...
lhcad.generate.common.GenerateError: unknown signal 'nope' (valid: wprime_xy, qstar_qwp, x_yyprime, wprime_bprime_t, wkk_rw, zprime_tprime, y_hh_4t)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lhcad.generate.common import GenerateError


@dataclass(frozen=True)
class Daughter:
    name: str
    mass: float | None
    prongs: int
    b: int = 0
    lepton_fraction: float = 0.0


@dataclass(frozen=True)
class Signal:
    name: str
    title: str
    mass: float
    daughters: tuple[Daughter, Daughter]
    code: int  # truth_process code (QCD = 0)
    width: float = 0.01  # relative natural width (Gaussian core)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "mass": self.mass,
            "code": self.code,
            "daughters": [
                {"name": d.name, "mass": d.mass, "prongs": d.prongs, "b": d.b, "lepton_fraction": d.lepton_fraction}
                for d in self.daughters
            ],
        }


SIGNALS: dict[str, Signal] = {
    s.name: s
    for s in (
        Signal("wprime_xy", "W'(3.5 TeV) → X(500) Y(100), X,Y → qq (LHCO R&D)", 3500.0,
               (Daughter("X", 500.0, 2), Daughter("Y", 100.0, 2)), code=1),
        Signal("qstar_qwp", "Q* → q W', W' → qq (1+2 prongs)", 3000.0,
               (Daughter("q", None, 1), Daughter("W'", 400.0, 2)), code=2),
        Signal("x_yyprime", "X → Y Y' → 4q (2+2 prongs)", 3000.0,
               (Daughter("Y", 170.0, 2), Daughter("Y'", 400.0, 2)), code=3),
        Signal("wprime_bprime_t", "W' → B' t → bZ t (3+3 prongs, b-tagged)", 3000.0,
               (Daughter("B'", 400.0, 3, b=1, lepton_fraction=0.1), Daughter("t", 172.5, 3, b=1, lepton_fraction=0.2)),
               code=4),
        Signal("wkk_rw", "W_KK → R W → 3W (4+2 prongs)", 3000.0,
               (Daughter("R", 400.0, 4, lepton_fraction=0.1), Daughter("W", 80.4, 2)), code=5),
        Signal("zprime_tprime", "Z' → T'T' → tZ tZ (5+5 prongs)", 4000.0,
               (Daughter("T'", 600.0, 5, b=1, lepton_fraction=0.35), Daughter("T'", 600.0, 5, b=1, lepton_fraction=0.35)),
               code=6),
        Signal("y_hh_4t", "Y → HH → 4t (6+6 prongs)", 3000.0,
               (Daughter("H", 600.0, 6, b=2, lepton_fraction=0.5), Daughter("H", 600.0, 6, b=2, lepton_fraction=0.5)),
               code=7),
    )
}


def signal_names() -> list[str]:
    return list(SIGNALS)


def get_signal(name: str, mass: float | None = None, daughter_masses: Sequence[float] | None = None) -> Signal:
    """The registered signal ``name``, optionally with another ``M_A`` and daughter masses."""
    try:
        sig = SIGNALS[name]
    except KeyError:
        raise GenerateError(f"unknown signal {name!r} (valid: {', '.join(SIGNALS)})") from None
    if mass is not None:
        if not mass > 0:
            raise GenerateError(f"signal mass must be positive (got {mass})")
        sig = replace(sig, mass=float(mass))
    if daughter_masses is not None:
        if len(daughter_masses) != 2:
            raise GenerateError(f"signal {name}: need 2 daughter masses (got {list(daughter_masses)})")
        ds = []
        for d, m in zip(sig.daughters, daughter_masses, strict=True):
            if d.mass is None:
                ds.append(d)  # a light-quark daughter has no mass parameter
            else:
                if not m > 0:
                    raise GenerateError(f"signal {name}: daughter mass must be positive (got {m})")
                ds.append(replace(d, mass=float(m)))
        sig = replace(sig, daughters=tuple(ds))
    heavy = sum(d.mass or 0.0 for d in sig.daughters)
    if heavy >= sig.mass:
        raise GenerateError(f"signal {name}: daughters ({heavy:g} GeV) heavier than M_A = {sig.mass:g} GeV")
    return sig

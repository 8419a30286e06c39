"""The public AD benchmark file formats, written from generated events (issue 12's generator side).

``--lhco-h5 FILE`` (``lhcad generate dijet``)
    The LHC Olympics 2020 R&D high-level feature table: a pandas HDF5 *table* (key ``df``,
    ``format="table"``, read with ``pandas.read_hdf``) with columns ``pxj1, pyj1, pzj1, mj1, tau1j1,
    tau2j1, tau3j1, pxj2, pyj2, pzj2, mj2, tau1j2, tau2j2, tau3j2`` (GeV) and ``label`` (1 = signal),
    for the two leading AK8 jets (j1 = higher pT, as in the R&D file). ``FILE`` holds the ``data``
    dataset; ``extra_bkg`` and ``test`` go to ``<stem>_extra_bkg.h5`` / ``<stem>_test.h5`` beside it
    (like ``events_anomalydetection_qcd_extra_inneronly_features.h5``).
``--h5 FILE`` (``lhcad generate l1``)
    The ADC2021 layout: HDF5 dataset ``Particles`` (N, 19, 4) float32 = MET, 4 electrons, 4 muons,
    10 jets × (pT, η, φ, class) with class 1 MET, 2 e, 3 μ, 4 jet, zero-padded and pT-ordered, plus
    ``Particles_Names`` and ``Particles_Classes`` as in the distributed files. ``FILE`` holds the SM
    background; each other dataset goes to ``<stem>_<dataset>.h5`` beside it.

Files are written under a temporary name and renamed when complete; they are removed again if the
generation fails later.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lhcad.generate.common import GenerateError, OutputDir

LHCO_COLUMNS = ("pxj1", "pyj1", "pzj1", "mj1", "tau1j1", "tau2j1", "tau3j1",
                "pxj2", "pyj2", "pzj2", "mj2", "tau1j2", "tau2j2", "tau3j2")


def check_h5_target(path: str | os.PathLike) -> Path:
    """Fail early (before any generation) when ``path`` cannot be written."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise GenerateError(f"h5 output {path}: is a directory")
    if not path.parent.is_dir():
        raise GenerateError(f"h5 output {path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise GenerateError(f"h5 output {path}: directory {path.parent} is not writable")
    return path


def sibling(path: Path, dataset: str) -> Path:
    return path.with_name(f"{path.stem}_{dataset}{path.suffix or '.h5'}")


def _atomic(out: OutputDir, final: Path, writer) -> Path:
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        writer(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    out.written.append(final)  # removed again if the generation fails later
    return final


def _nanoaod_value(values: np.ndarray) -> np.ndarray:
    """The value the NanoAOD branch holds (float32), as float64."""
    return np.asarray(values).astype(np.float32).astype(np.float64)


def lhco_columns(block) -> dict[str, np.ndarray]:
    """LHCO feature columns of a dijet block (two leading AK8 jets, j1 = higher pT).

    Computed from the float32 values the NanoAOD files of the same events hold (p = pT (cos φ,
    sin φ, sinh η) in float64, as the dijet processor builds its four-vectors), so both import
    paths start from the same numbers.
    """
    fj = block.fatjet
    cols: dict[str, np.ndarray] = {}
    for i in (0, 1):
        j = f"j{i + 1}"
        pt, eta, phi = (_nanoaod_value(fj[v][:, i]) for v in ("pt", "eta", "phi"))
        cols[f"px{j}"] = pt * np.cos(phi)
        cols[f"py{j}"] = pt * np.sin(phi)
        cols[f"pz{j}"] = pt * np.sinh(eta)
        cols[f"m{j}"] = _nanoaod_value(fj["mass"][:, i])
        for t in (1, 2, 3):
            cols[f"tau{t}{j}"] = _nanoaod_value(fj[f"tau{t}"][:, i])
    cols = {k: cols[k] for k in LHCO_COLUMNS}
    cols["label"] = (block.event["truth_label"] > 0).astype(np.float64)
    return cols


def write_lhco(out: OutputDir, path: str | os.PathLike, blocks: dict[str, list[dict[str, np.ndarray]]]) -> Path:
    """Write the ``data`` columns to ``path`` and other datasets beside it; returns ``path``."""
    import pandas as pd

    path = check_h5_target(path)
    for dataset, parts in blocks.items():
        frame = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        target = path if dataset == "data" else sibling(path, dataset)
        _atomic(out, target, lambda tmp, frame=frame: frame.to_hdf(tmp, key="df", format="table", mode="w"))
    return path


def write_adc2021(out: OutputDir, path: str | os.PathLike, particles: dict[str, list[np.ndarray]]) -> Path:
    """Write ``Particles`` (N, 19, 4) per dataset: SM into ``path``, the others beside it."""
    import h5py

    path = check_h5_target(path)

    def writer(arr):
        def write(tmp):
            with h5py.File(tmp, "w") as f:
                f.create_dataset("Particles", data=arr, compression="gzip", compression_opts=1)
                f.create_dataset("Particles_Names", data=np.array([b"Pt", b"Eta", b"Phi", b"Class"]))
                f.create_dataset("Particles_Classes", data=np.array(
                    [b"MET_class_1", b"Four_Ele_class_2", b"Four_Mu_class_3", b"Ten_Jet_class_4"]))
        return write

    for dataset, parts in particles.items():
        target = path if dataset == "sm" else sibling(path, dataset)
        _atomic(out, target, writer(np.concatenate(parts).astype(np.float32)))
    return path

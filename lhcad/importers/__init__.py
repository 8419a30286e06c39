"""Importers for the public anomaly-detection benchmark files users already hold.

They write the same Zarr groups as the processors, so every method, metric and report runs on them
unchanged:

* :func:`import_lhco` — LHC Olympics 2020 R&D high-level features (pandas HDF5,
  ``events_anomalydetection_v2.features.h5``, ``events_anomalydetection_qcd_extra_inneronly_features.h5``)
  → ``dijet/`` (see :mod:`lhcad.importers.lhco`);
* :func:`import_adc2021` — ADC2021 ``Particles`` (N, 19, 4) files and the (N, 57) files of the
  challenge's example code → ``l1/`` (see :mod:`lhcad.importers.adc2021`).

Command line: ``lhcad import lhco FILE... --out STORE.zarr`` and
``lhcad import adc2021 FILE... --out STORE.zarr --dataset NAME``.
"""

from lhcad.importers._common import ImporterError
from lhcad.importers.adc2021 import import_adc2021
from lhcad.importers.lhco import import_lhco

__all__ = ["ImporterError", "import_adc2021", "import_lhco"]

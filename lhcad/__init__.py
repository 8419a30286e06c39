"""lhcad — anomaly detection on CMS Run 2 NanoAOD.

Stages (each a subpackage, talking only through the Zarr store and small typed configs):

- :mod:`lhcad.generate`   synthetic NanoAOD with known truth
- :mod:`lhcad.processors` coffea processors → Zarr feature store
- :mod:`lhcad.models`     anomaly-detection estimators and distributed training jobs
- :mod:`lhcad.stats`      m_jj fits, bump hunt, pyhf limits
- :mod:`lhcad.deploy`     L1 firmware artefacts (QKeras, hls4ml)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lhcad")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

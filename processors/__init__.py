"""coffea processors that turn NanoAOD into the lhcad Zarr feature store.

- :class:`~lhcad.processors.dijet.DijetProcessor`  → ``dijet/`` per-event jet-substructure features
- :class:`~lhcad.processors.lumi.LumiProcessor`    → ``lumi/<ME>/`` per-(run, LS) histograms
- :class:`~lhcad.processors.l1.L1Processor`        → ``l1/particles`` (N, 19, 3) L1 objects
- :func:`~lhcad.processors.runner.process`         fileset → executor → parts → store (resumable)

The store layout the other stages read is described in ``processors/README.md``.
"""

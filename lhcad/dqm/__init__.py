"""Data-quality monitoring (DQM): per-lumisection autoencoders, LS certification, recovered luminosity.

The procedure, top to bottom (one module per step):

1. :mod:`lhcad.dqm.data` — read the per-(run, LS) histograms of each monitor element (ME) from the
   store (``lumi/<ME>/{values,variances,run,lumi}``), normalise them per LS, mark low-statistics LSs.
2. ``lhcad.models.dqm_dense`` / ``lhcad.models.dqm_lstm`` — autoencoders trained on LSs of GOOD
   reference runs; their per-LS score is a Poisson-aware reconstruction error (:mod:`lhcad.dqm.score`).
3. :mod:`lhcad.dqm.calibrate` — the flagging threshold at a chosen false-flag rate on held-out GOOD LSs.
4. :mod:`lhcad.dqm.certify` — flag LSs, remove them, test the rest of the run against the GOOD
   reference (χ² or Kolmogorov-Smirnov test, ``dqm.run_test``) → GOOD / RECOVERED / BAD per ME and combined; golden JSON.
5. :mod:`lhcad.dqm.lumi` — certified and recovered luminosity with ``coffea.lumi_tools.LumiData``.
6. :mod:`lhcad.dqm.plots` — reconstruction error vs LS, input vs reconstruction for the worst LS.

:mod:`lhcad.dqm.workflow` runs training and scoring as Dask tasks (``Cluster.map``), :mod:`lhcad.dqm.cli`
is ``lhcad dqm train|score|certify|lumi``.
"""

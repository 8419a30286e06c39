"""Classifier-based AD references: idealized AD (IAD) and the fully supervised ceiling.

Both are two-sample classifiers (:class:`TwoSampleAD`): ``fit(X1, X0)`` learns to tell sample 1
from sample 0 and ``score_samples(X)`` is the class-1 probability — monotonic in the learned
likelihood ratio p1/p0.

* :class:`IdealizedAD` — sample 1: signal-region data, sample 0: a *perfectly known* signal-region
  background sample (the generator's ``extra_bkg``). The best any weakly supervised method can do.
* :class:`Supervised` — sample 1: labelled signal, sample 0: labelled background.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> iad = IdealizedAD(classifier_params={"max_iter": 20}).fit(rng.normal(1, 1, (500, 2)),
...                                                           rng.normal(0, 1, (500, 2)))
>>> float(iad.score_samples([[3.0, 3.0]])[0]) > float(iad.score_samples([[-3.0, -3.0]])[0])
True
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator
from lhcad.models.classifiers import classifier_from_payload, make_classifier


class TwoSampleAD(Estimator):
    """Classify sample 1 against sample 0 with an HGB or MLP ensemble (``classifier``)."""

    def __init__(self, classifier: str = "hgb", classifier_params: dict | None = None):
        self.classifier = classifier
        self.classifier_params = classifier_params

    def fit(self, X1, X0, sample_weight0=None) -> TwoSampleAD:
        """Sample 1 (label 1) against sample 0 (label 0, optional per-row weights)."""
        X1, X0 = np.asarray(X1, dtype=np.float32), np.asarray(X0, dtype=np.float32)
        if len(X1) == 0 or len(X0) == 0:
            raise ValueError(f"{type(self).__name__}.fit: empty sample ({len(X1)} vs {len(X0)} rows)")
        X = np.concatenate([X1, X0])
        y = np.concatenate([np.ones(len(X1), int), np.zeros(len(X0), int)])
        w = None
        if sample_weight0 is not None:
            w = np.concatenate([np.ones(len(X1)), np.asarray(sample_weight0, dtype=np.float64)])
        self.classifier_ = make_classifier(self.classifier, **(self.classifier_params or {}))
        self.classifier_.fit(X, y, sample_weight=w)
        self.n_train_ = (len(X1), len(X0))
        self.fitted_ = True
        return self

    def score_samples(self, X, m=None) -> np.ndarray:
        """Class-1 probability (``m`` is accepted for a uniform method interface and unused)."""
        self._check_fitted()
        return self.classifier_.score_samples(np.asarray(X, dtype=np.float32))

    def _get_state(self) -> dict:
        return {"classifier": self.classifier_.to_payload(), "n_train": self.n_train_}

    def _set_state(self, state: dict) -> None:
        self.classifier_ = classifier_from_payload(state["classifier"])
        self.n_train_ = tuple(state["n_train"])


class IdealizedAD(TwoSampleAD):
    """IAD: ``fit(X_data_sr, X_background_sr)`` with a perfectly known SR background sample."""


class Supervised(TwoSampleAD):
    """Supervised: ``fit(X_signal, X_background)`` with truth labels."""

"""CATHODE-b: CATHODE with the DeepB b-tag scores of both jets added to the LHCO feature set.

Only a feature configuration of :class:`lhcad.models.cathode.CATHODE` (the CMS EXO-22-026 variant
sensitive to b-rich signals such as W' → B't or Y → HH → 4t). Use :data:`CATHODE_B_FEATURES` for
``load_dijet(features=...)`` or the ``features`` of the training config (:func:`train_settings`).
:func:`check_features` validates a feature list against the store's ``dijet/`` columns.

>>> CATHODE_B_FEATURES
('mj1', 'delta_m', 'tau21_j1', 'tau21_j2', 'j1_btag', 'j2_btag')
"""

from __future__ import annotations

from lhcad.models.data import DEFAULT_FEATURES, DataError
from lhcad.store import DIJET_COLUMNS

CATHODE_B_FEATURES: tuple[str, ...] = (*DEFAULT_FEATURES, "j1_btag", "j2_btag")


def check_features(features) -> tuple[str, ...]:
    """The features as a tuple, or :class:`DataError` naming the first one that is no dijet column."""
    features = tuple(features)
    for f in features:
        if f not in DIJET_COLUMNS:
            raise DataError(f"feature {f!r} is not a dijet/ column (see lhcad.store.DIJET_COLUMNS)")
    if len(set(features)) != len(features):
        raise DataError(f"duplicate features in {list(features)}")
    return features


def train_settings(train: dict) -> dict:
    """A copy of a training-config dict (``TrainConfig.model_dump()``) running CATHODE-b."""
    return {**train, "features": list(check_features(CATHODE_B_FEATURES))}

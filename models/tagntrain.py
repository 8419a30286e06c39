"""Tag-N-Train (TNT): autoencoder tags of one jet build mixed samples to train a classifier on the other.

Amram & Suárez (2020), one of the five CMS EXO-22-026 methods:

1. Autoencoders (:class:`~lhcad.models.vaeqr.JetVAE` with ``beta = 0``), one per jet position (j1 =
   lighter, j2 = heavier jet), are trained on the events' jets; their reconstruction loss tags
   anomalous-looking jets.
2. A resonance makes *both* jets anomalous, while QCD jets are nearly independent of each other at
   fixed m_jj. So the events whose **jet 2** is AE-tagged (loss in the top ``tag_fraction``) are a
   sample enriched in signal *jet 1s*, and the events with the least anomalous jet 2 (bottom
   ``untag_fraction``) a depleted one. A CWoLa classifier on jet-1 features separates the two
   (``background="low_tag"``); symmetrically for jet 2. With ``background="sideband"`` the depleted
   sample is instead the sideband events passing the same tag threshold (TNT combined with CWoLa
   hunting, as in the CMS search).
3. The event score combines both jets: the product of the two classifiers' outputs.

``X`` is ``[jet-1 variables, jet-2 variables]`` as in :mod:`lhcad.models.vaeqr`.
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator
from lhcad.models.classifiers import classifier_from_payload, make_classifier
from lhcad.models.vaeqr import JET_VARS, JetVAE, split_jets


class TagNTrain(Estimator):
    """Tag-N-Train estimator: ``fit(X, in_sr=None, in_sb=None)``; ``score_samples(X)``.

    Parameters
    ----------
    jet_vars : per-jet variables; ae_params : :class:`JetVAE` hyper-parameters (``beta`` forced to 0);
    tag_fraction : events whose other jet's AE loss is in this top fraction form the enriched sample;
    untag_fraction : bottom fraction forming the depleted sample (``background="low_tag"``);
    background : ``"low_tag"`` or ``"sideband"``; classifier, classifier_params : the CWoLa classifiers
    (``"hgb"`` or ``"mlp"``); random_state : seed.
    """

    def __init__(self, jet_vars: tuple[str, ...] = JET_VARS, ae_params: dict | None = None,
                 tag_fraction: float = 0.2, untag_fraction: float = 0.5, background: str = "low_tag",
                 classifier: str = "hgb", classifier_params: dict | None = None, random_state: int = 0):
        self.jet_vars = jet_vars
        self.ae_params = ae_params
        self.tag_fraction = tag_fraction
        self.untag_fraction = untag_fraction
        self.background = background
        self.classifier = classifier
        self.classifier_params = classifier_params
        self.random_state = random_state

    def _ae(self, seed: int) -> JetVAE:
        params = {"latent": 2, "random_state": seed, **(self.ae_params or {})}
        params.update(beta=0.0, jet_vars=tuple(self.jet_vars))
        return JetVAE(**params)

    def fit(self, X, m=None, in_sr=None, in_sb=None) -> TagNTrain:
        """Train on events ``X``. ``low_tag``: all given rows (or ``in_sr``) are the signal-region data;
        ``sideband``: ``in_sr`` / ``in_sb`` masks pick signal-region and sideband rows."""
        if self.background not in ("low_tag", "sideband"):
            raise ValueError(f"TagNTrain: background must be 'low_tag' or 'sideband', not {self.background!r}")
        if not (0 < self.tag_fraction < 1 and 0 < self.untag_fraction <= 1 - self.tag_fraction):
            raise ValueError(f"TagNTrain: need 0 < tag_fraction < 1 and 0 < untag_fraction ≤ 1 - tag_fraction "
                             f"(got {self.tag_fraction}, {self.untag_fraction})")
        X = np.asarray(X, dtype=np.float64)
        finite = np.isfinite(X).all(axis=1)
        sr = finite & (np.ones(len(X), bool) if in_sr is None else np.asarray(in_sr, bool))
        if self.background == "sideband":
            if in_sb is None:
                raise ValueError("TagNTrain(background='sideband').fit needs in_sb (and in_sr) masks")
            sb = finite & np.asarray(in_sb, bool)
        else:
            sb = np.zeros(len(X), bool)
        if sr.sum() < 50:
            raise ValueError(f"TagNTrain.fit: only {int(sr.sum())} finite signal-region events")
        J = split_jets(X, len(self.jet_vars))
        self.aes_, self.classifiers_, self.n_train_ = [], [], []
        for i in (0, 1):
            self.aes_.append(self._ae(self.random_state + i).fit(J[i][sr | sb]))
        for i in (0, 1):
            other = 1 - i
            tag = self.aes_[other].jet_loss(J[other])
            cut = np.quantile(tag[sr], 1 - self.tag_fraction)
            rich = sr & (tag >= cut)
            if self.background == "low_tag":
                poor = sr & (tag <= np.quantile(tag[sr], self.untag_fraction))
            else:
                poor = sb & (tag >= cut)
            if not rich.any() or not poor.any():
                raise ValueError(f"TagNTrain.fit: jet {i + 1} has an empty mixed sample "
                                 f"({int(rich.sum())} enriched, {int(poor.sum())} depleted)")
            Xc = np.concatenate([J[i][rich], J[i][poor]]).astype(np.float32)
            yc = np.r_[np.ones(rich.sum(), int), np.zeros(poor.sum(), int)]
            params = {"random_state": self.random_state + 17 * i, **(self.classifier_params or {})}
            clf = make_classifier(self.classifier, **params).fit(Xc, yc)
            self.classifiers_.append(clf)
            self.n_train_.append((int(rich.sum()), int(poor.sum())))
        self.fitted_ = True
        return self

    def jet_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(jet-1 classifier output, jet-2 classifier output); NaN for non-finite events."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        J = split_jets(X, len(self.jet_vars))
        ok = np.isfinite(X).all(axis=1)
        out = []
        for i in (0, 1):
            s = np.full(len(X), np.nan)
            s[ok] = self.classifiers_[i].score_samples(J[i][ok].astype(np.float32))
            out.append(s)
        return out[0], out[1]

    def score_samples(self, X, m=None) -> np.ndarray:
        """Event score: product of the two jets' classifier outputs (``m`` unused)."""
        s1, s2 = self.jet_scores(X)
        return s1 * s2

    def _get_state(self) -> dict:
        return {"aes": [a.to_payload() for a in self.aes_],
                "classifiers": [c.to_payload() for c in self.classifiers_], "n_train": self.n_train_}

    def _set_state(self, state: dict) -> None:
        self.aes_ = [JetVAE.from_payload(a) for a in state["aes"]]
        self.classifiers_ = [classifier_from_payload(c) for c in state["classifiers"]]
        self.n_train_ = [tuple(t) for t in state["n_train"]]

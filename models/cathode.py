"""CATHODE: a sideband-trained conditional flow makes an in-situ background template for the SR.

1. A :class:`~lhcad.models.flows.ConditionalFlow` p(x | m) is trained on sideband (SB) data — or
   several (an ensemble: independently trained flows, the template is their equal mixture, so the
   mis-modelling of any one flow is diluted; the CATHODE paper samples from several epochs likewise).
2. m values for the SR are drawn from a Gaussian KDE of the SR data's m_jj, and the flow(s) sample an
   oversampled (×``oversample``) background template x ~ p(x | m).
3. A classifier (HGB or MLP ensemble) learns SR data vs template; its score is monotonic in
   p_data / p_background in the SR. Template rows are down-weighted so both classes weigh the same.

:meth:`CATHODE.template_auc` draws a fresh template and measures how well the classifier tells
held-out data from it: with no signal this is the background closure test (AUC ≈ 0.5).
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator
from lhcad.models.classifiers import classifier_from_payload, make_classifier
from lhcad.models.flows import ConditionalFlow


def sample_mass(m_sr: np.ndarray, n: int, random_state: int = 0) -> np.ndarray:
    """``n`` m_jj values from a Gaussian KDE of ``m_sr``, kept inside [min(m_sr), max(m_sr)]."""
    from scipy.stats import gaussian_kde

    m_sr = np.asarray(m_sr, dtype=np.float64)
    kde = gaussian_kde(m_sr)
    lo, hi = m_sr.min(), m_sr.max()
    rng = np.random.default_rng(random_state)
    out = np.empty(0)
    while len(out) < n:
        draw = kde.resample(2 * (n - len(out)) + 16, seed=rng)[0]
        out = np.concatenate([out, draw[(draw >= lo) & (draw <= hi)]])
    return out[:n]


class CATHODE(Estimator):
    """CATHODE estimator.

    Parameters
    ----------
    classifier, classifier_params : the data-vs-template classifier (``"hgb"`` or ``"mlp"``);
    oversample : template events per SR data event; flow_params : :class:`ConditionalFlow`
    hyper-parameters used when ``fit`` has to train the background flow itself;
    random_state : seed of the mass and template sampling.
    """

    def __init__(self, classifier: str = "hgb", classifier_params: dict | None = None,
                 oversample: int = 4, flow_params: dict | None = None, random_state: int = 0):
        self.classifier = classifier
        self.classifier_params = classifier_params
        self.oversample = oversample
        self.flow_params = flow_params
        self.random_state = random_state

    @property
    def background_flow_(self) -> ConditionalFlow:
        """The first background flow (all of them: ``background_flows_``)."""
        return self.background_flows_[0]

    def make_template(self, n: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` background-template events (x, m) in the SR (finite rows only): an equal mixture of
        the background flows (flow j samples the rows with index ≡ j modulo the number of flows)."""
        m = sample_mass(self.m_sr_, n, random_state)
        x = np.empty((len(m), len(self.background_flows_[0].pre_.lo_)))
        k = len(self.background_flows_)
        for j, flow in enumerate(self.background_flows_):
            x[j::k] = flow.sample(m[j::k], random_state=random_state + 7919 * j)
        ok = np.isfinite(x).all(axis=1)
        return x[ok], m[ok]

    def fit(self, X_sr, m_sr, background_flow: ConditionalFlow | list[ConditionalFlow] | None = None,
            X_sb=None, m_sb=None, bounds=None) -> CATHODE:
        """Train on SR data ``(X_sr, m_sr)``; the background flow (or a list of flows, sampled as an
        equal mixture) is given, or one is trained on ``(X_sb, m_sb)``."""
        X_sr = np.asarray(X_sr, dtype=np.float64)
        if background_flow is None:
            if X_sb is None or m_sb is None:
                raise ValueError("CATHODE.fit needs background_flow or sideband data (X_sb, m_sb)")
            background_flow = ConditionalFlow(**(self.flow_params or {})).fit(X_sb, m_sb, bounds=bounds)
        flows = list(background_flow) if isinstance(background_flow, (list, tuple)) else [background_flow]
        if not flows:
            raise ValueError("CATHODE.fit: empty list of background flows")
        self.background_flows_ = flows
        self.m_sr_ = np.asarray(m_sr, dtype=np.float64)
        x_t, _ = self.make_template(self.oversample * len(X_sr), self.random_state)
        X = np.concatenate([X_sr, x_t]).astype(np.float32)
        y = np.concatenate([np.ones(len(X_sr), int), np.zeros(len(x_t), int)])
        self.classifier_ = make_classifier(self.classifier, **(self.classifier_params or {}))
        self.classifier_.fit(X, y)
        self.n_train_ = (len(X_sr), len(x_t))
        self.fitted_ = True
        return self

    def score_samples(self, X, m=None) -> np.ndarray:
        """Data-vs-template classifier output (``m`` unused)."""
        self._check_fitted()
        return self.classifier_.score_samples(np.asarray(X, dtype=np.float32))

    def template_auc(self, X_heldout, random_state: int = 12345) -> float:
        """AUC of held-out SR data vs a fresh template of the same size (0.5 = perfect closure)."""
        from sklearn.metrics import roc_auc_score

        self._check_fitted()
        x_t, _ = self.make_template(len(X_heldout), random_state)
        s = np.concatenate([self.score_samples(X_heldout), self.score_samples(x_t)])
        y = np.concatenate([np.ones(len(X_heldout)), np.zeros(len(x_t))])
        return float(roc_auc_score(y, s))

    def _get_state(self) -> dict:
        return {"classifier": self.classifier_.to_payload(),
                "flows": [f.to_payload() for f in self.background_flows_],
                "m_sr": self.m_sr_, "n_train": self.n_train_}

    def _set_state(self, state: dict) -> None:
        self.classifier_ = classifier_from_payload(state["classifier"])
        flows = state["flows"] if "flows" in state else [state["flow"]]      # "flow": one-flow artefacts
        self.background_flows_ = [ConditionalFlow.from_payload(f) for f in flows]
        self.m_sr_ = np.asarray(state["m_sr"])
        self.n_train_ = tuple(state["n_train"])

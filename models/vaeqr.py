"""VAE-QR: a per-jet variational autoencoder, the lower of the two jets' losses, decorrelated by QR.

The CMS EXO-22-026 unsupervised method:

1. :class:`JetVAE` — a (variational) autoencoder on jet-level inputs. By default the substructure
   features of each AK8 jet in the ``dijet/`` table (:data:`JET_VARS`: mass, soft-drop mass, τ21, τ32,
   τ43, constituent count, LSF3, DeepB; masses and counts log-transformed, then standardised). Both
   jets of an event are separate training examples. ``beta = 0`` gives a plain autoencoder (used by
   Tag-N-Train). The per-jet loss is the reconstruction MSE (at the posterior mean) + β·KL.
2. It is trained on the QCD-dominated |Δη| > 1.4 region (``sideband`` rows; the processors write it
   when run with a looser ``delta_eta_max``), where a resonance decaying to two jets is rare.
3. The event's raw score is the *lower* of its two jets' losses: a dijet resonance makes both jets
   anomalous, QCD usually has at least one ordinary jet.
4. The raw score grows with m_jj (jet masses scale with pT); a
   :class:`~lhcad.models.quantile.QuantileDecorrelator` of the raw score vs m_jj, fitted on the
   analysis (|Δη| < 1.3) events, makes the final score the loss's conditional quantile level —
   selecting "above the fitted quantile" keeps a flat fraction of the background at every m_jj.
   The QR rows should be background-dominated: a signal that makes up a sizeable part of the upper
   tail near its mass raises the fitted high quantiles there (pass ``qr_rows``).

The feature matrix is ``X = [jet-1 variables, jet-2 variables]`` (:func:`per_jet_columns` names the
store columns), so VAE-QR uses the same ``fit(X, m)`` / ``score_samples(X, m)`` interface as the
other dijet methods.
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator, resolve_device
from lhcad.models.flows import train_density
from lhcad.models.quantile import QuantileDecorrelator

JET_VARS = ("mass", "msoftdrop", "tau21", "tau32", "tau43", "nconst", "lsf3", "btag")
LOG_VARS = ("mass", "msoftdrop", "nconst")
DELTA_ETA_SIDEBAND = 1.4


def per_jet_columns(jet_vars=JET_VARS) -> tuple[str, ...]:
    """Store columns of ``X``: ``j1_<var>`` for every var, then ``j2_<var>``."""
    return tuple(f"j{i}_{v}" for i in (1, 2) for v in jet_vars)


def split_jets(X, n_vars: int) -> tuple[np.ndarray, np.ndarray]:
    """(jet-1 block, jet-2 block) of a ``[j1 vars, j2 vars]`` matrix."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 2 * n_vars:
        raise ValueError(f"expected X with 2 × {n_vars} per-jet columns, got shape {X.shape}")
    return X[:, :n_vars], X[:, n_vars:]


def sideband_rows(delta_eta, cut: float = DELTA_ETA_SIDEBAND) -> np.ndarray:
    """The QCD-dominated |Δη| > ``cut`` rows VAE-QR trains on."""
    return np.abs(np.asarray(delta_eta, dtype=np.float64)) > cut


def _net(n_in: int, hidden: tuple[int, ...], n_out: int):
    import torch.nn as nn

    layers: list = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ELU()]
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class _VAEModule:
    """Encoder (→ μ, log σ²) and decoder as one ``torch.nn.Module``."""

    @staticmethod
    def build(n_in: int, latent: int, hidden: tuple[int, ...]):
        import torch.nn as nn

        mod = nn.Module()
        mod.enc = _net(n_in, hidden, 2 * latent)
        mod.dec = _net(latent, tuple(reversed(hidden)), n_in)
        return mod


class JetVAE(Estimator):
    """Per-jet (variational) autoencoder on jet-level features.

    Parameters
    ----------
    jet_vars : names of the per-jet variables (columns of the jet blocks), for the log transform;
    latent, hidden : network size; beta : KL weight (0 → deterministic autoencoder);
    epochs, batch_size, lr, val_fraction : training (best validation epoch kept);
    device : ``"auto"``, ``"cpu"``, ``"cuda"``; random_state : seed.
    """

    def __init__(self, jet_vars: tuple[str, ...] = JET_VARS, latent: int = 3, hidden: tuple[int, ...] = (32, 32),
                 beta: float = 0.5, epochs: int = 30, batch_size: int = 256, lr: float = 1e-3,
                 val_fraction: float = 0.2, device: str = "auto", random_state: int = 0):
        self.jet_vars = jet_vars
        self.latent = latent
        self.hidden = hidden
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.device = device
        self.random_state = random_state

    def _prep(self, J) -> np.ndarray:
        J = np.asarray(J, dtype=np.float64)
        if J.ndim != 2 or J.shape[1] != len(self.jet_vars):
            raise ValueError(f"JetVAE: expected (n, {len(self.jet_vars)}) jet features, got {J.shape}")
        J = J.copy()
        for i, v in enumerate(self.jet_vars):
            if v in LOG_VARS:
                J[:, i] = np.log1p(np.maximum(J[:, i], 0.0))
        return J

    def _scaled(self, J) -> np.ndarray:
        return (self._prep(J) - self.mean_) / self.std_

    def _module(self):
        import torch

        dev = resolve_device(self.device)
        if getattr(self, "_mod", None) is None or self._mod_device != dev:
            mod = _VAEModule.build(len(self.jet_vars), self.latent, tuple(self.hidden))
            mod.load_state_dict(self.state_)
            self._mod, self._mod_device = mod.to(dev).eval(), dev
        return self._mod, torch.device(dev)

    @staticmethod
    def _losses(mod, x, beta: float, sample: bool):
        import torch

        h = mod.enc(x)
        mu, logvar = h.chunk(2, dim=1)
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if (sample and beta > 0) else mu
        rec = ((mod.dec(z) - x) ** 2).sum(dim=1)
        kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(dim=1) if beta > 0 else torch.zeros_like(rec)
        return rec + beta * kl

    def fit(self, J) -> JetVAE:
        """Train on jets ``J`` (n, len(jet_vars)); non-finite rows are rejected."""
        import torch

        P = self._prep(J)
        if not np.isfinite(P).all():
            raise ValueError(f"JetVAE.fit: {int((~np.isfinite(P).all(axis=1)).sum())} jets have NaN/inf features")
        if len(P) < 20:
            raise ValueError(f"JetVAE.fit: only {len(P)} jets")
        self.mean_ = P.mean(axis=0)
        self.std_ = np.where(P.std(axis=0) > 0, P.std(axis=0), 1.0)
        torch.manual_seed(self.random_state)
        dev = resolve_device(self.device)
        x = torch.as_tensor((P - self.mean_) / self.std_, dtype=torch.float32, device=dev)
        mod = _VAEModule.build(P.shape[1], self.latent, tuple(self.hidden)).to(dev)
        beta = float(self.beta)
        self.history_ = train_density(
            mod, lambda idx: self._losses(mod, x[idx], beta, sample=mod.training).mean(), len(P),
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, val_fraction=self.val_fraction,
            seed=self.random_state, device=dev,
        )
        self.state_ = {k: v.detach().cpu() for k, v in mod.state_dict().items()}
        self._mod, self._mod_device = mod.eval(), dev
        self.fitted_ = True
        return self

    def jet_loss(self, J, batch: int = 65536) -> np.ndarray:
        """Per-jet anomaly loss (reconstruction at the posterior mean + β·KL); NaN for non-finite jets."""
        import torch

        self._check_fitted()
        xs = self._scaled(J)
        ok = np.isfinite(xs).all(axis=1)
        out = np.full(len(xs), np.nan)
        mod, dev = self._module()
        xt = torch.as_tensor(xs[ok], dtype=torch.float32, device=dev)
        res = []
        with torch.no_grad():
            for s in range(0, len(xt), batch):
                res.append(self._losses(mod, xt[s:s + batch], float(self.beta), sample=False).cpu().numpy())
        out[ok] = np.concatenate(res) if res else np.empty(0)
        return out

    score_samples = jet_loss

    def _get_state(self) -> dict:
        return {"net": self.state_, "mean": self.mean_, "std": self.std_, "history": self.history_}

    def _set_state(self, state: dict) -> None:
        self.state_ = state["net"]
        self.mean_, self.std_ = np.asarray(state["mean"]), np.asarray(state["std"])
        self.history_ = list(state.get("history", []))
        self._mod = None


class VAEQR(Estimator):
    """VAE-QR estimator: ``fit(X, m, sideband)``; ``score_samples(X, m)`` = QR-decorrelated min-jet loss.

    Parameters
    ----------
    jet_vars : per-jet variables (X = [j1 vars, j2 vars]); vae_params : :class:`JetVAE`
    hyper-parameters; quantiles, qr_degree : the :class:`QuantileDecorrelator`;
    decorrelate : False gives the raw min-loss score (for comparisons); random_state : seed.
    """

    def __init__(self, jet_vars: tuple[str, ...] = JET_VARS, vae_params: dict | None = None,
                 quantiles: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99), qr_degree: int = 2,
                 decorrelate: bool = True, random_state: int = 0):
        self.jet_vars = jet_vars
        self.vae_params = vae_params
        self.quantiles = quantiles
        self.qr_degree = qr_degree
        self.decorrelate = decorrelate
        self.random_state = random_state

    def fit(self, X, m, sideband=None, qr_rows=None) -> VAEQR:
        """Train the VAE on both jets of the ``sideband`` rows (|Δη| > 1.4; default: all rows) and the
        quantile regression on the raw scores of ``qr_rows`` (default: the non-sideband rows, or all)."""
        X = np.asarray(X, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64)
        n = len(X)
        sb = np.ones(n, bool) if sideband is None else np.asarray(sideband, bool)
        finite = np.isfinite(X).all(axis=1) & np.isfinite(m)
        j1, j2 = split_jets(X[sb & finite], len(self.jet_vars))
        if len(j1) < 20:
            raise ValueError(f"VAEQR.fit: only {len(j1)} finite sideband events to train the VAE on")
        params = {"random_state": self.random_state, **(self.vae_params or {}), "jet_vars": tuple(self.jet_vars)}
        self.vae_ = JetVAE(**params).fit(np.concatenate([j1, j2]))
        self.n_train_ = int(len(j1))
        if self.decorrelate:
            if qr_rows is None:
                qr_rows = ~sb if (~sb).sum() >= 100 else np.ones(n, bool)
            rows = np.asarray(qr_rows, bool) & finite
            self.qr_ = QuantileDecorrelator(self.quantiles, degree=self.qr_degree,
                                            random_state=self.random_state).fit(self.raw_score(X[rows]), m[rows])
        self.fitted_ = True
        return self

    def jet_losses(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(jet-1 loss, jet-2 loss) per event."""
        self.vae_._check_fitted()
        j1, j2 = split_jets(X, len(self.jet_vars))
        return self.vae_.jet_loss(j1), self.vae_.jet_loss(j2)

    def raw_score(self, X) -> np.ndarray:
        """The lower of the two jets' losses (before decorrelation)."""
        l1, l2 = self.jet_losses(X)
        return np.minimum(l1, l2)

    def score_samples(self, X, m=None) -> np.ndarray:
        """Decorrelated score (conditional quantile level of the min-jet loss at this m_jj)."""
        raw = self.raw_score(X)
        if not self.decorrelate:
            return raw
        if m is None:
            raise ValueError("VAEQR.score_samples needs m (the resonant mass) for the decorrelation")
        out = np.full(len(raw), np.nan)
        ok = np.isfinite(raw) & np.isfinite(np.asarray(m, dtype=np.float64))
        out[ok] = self.qr_.transform(raw[ok], np.asarray(m, dtype=np.float64)[ok])
        return out

    def _get_state(self) -> dict:
        state = {"vae": self.vae_.to_payload(), "n_train": self.n_train_}
        if self.decorrelate:
            state["qr"] = self.qr_.to_payload()
        return state

    def _set_state(self, state: dict) -> None:
        self.vae_ = JetVAE.from_payload(state["vae"])
        self.n_train_ = state["n_train"]
        if "qr" in state:
            self.qr_ = QuantileDecorrelator.from_payload(state["qr"])

"""Dense VAE for L1 AD with the AXOL1TL score μ² = Σ_i μ_i² (encoder only, as deployed).

Encoder 57 → 24 → 12 → (μ, log σ²) of dimension 8 (≈ 3.5 k FLOPs for the μ head, see
:func:`lhcad.models.l1_metrics.dense_flops`); decoder mirrors it. Loss per event::

    L = MSE(x, x̂) + β · KL(N(μ, σ²) ‖ N(0, 1)) / 57

(MSE = mean over the 57 features; the KL is summed over the latent dimensions and divided by the
number of features, so β = 1 weights both terms per input feature). β is linearly warmed up over the
first ``warmup`` epochs. Scores: ``mu2`` (Σμ², encoder only), ``loss`` (the full per-event loss with
the decoder run on μ), ``kl``.

Measured on the generated L1 sample (``benchmarks/l1.py`` defaults: 600 k training events, 20 epochs;
1.05 M held-out SM events, 200 k per signal): with β = 1 the posterior is nearly collapsed (RMS of μ
on background ≈ 4e-4) and μ² is the best of the scores here (A→4ℓ AUC 0.95, TPR@1e-5 = 0.431 ± 0.001;
the full loss gives 2e-5); in an earlier sweep β = 0.01 kept the latent active (std of μ ≈ 0.7–1.1)
but μ² then stopped separating (A→4ℓ AUC 0.35, TPR@1e-5 = 0). The collapsed μ is why the deployed μ
head is scaled to unit RMS and needs finer fixed-point steps than 8-bit weights give (see
:mod:`lhcad.deploy.ranges` and ``firmware_report.json`` → ``bit_widths.bits_search``).

>>> import numpy as np
>>> p = np.abs(np.random.default_rng(0).normal(10, 3, (256, 19, 3))).astype(np.float32)
>>> vae = VAE(epochs=1).fit(p, progress=False)
>>> sorted(vae.score_all(p))
['kl', 'latent', 'loss', 'mu2']
"""

from __future__ import annotations

from lhcad.models.l1_base import L1Estimator, linear_layers, mlp
from lhcad.models.l1_preprocess import N_FEATURES


class VariationalObjective:
    """MSE + β·KL training objective and the (μ², loss, KL) scores of a VAE with ``_encode(m, x)``.

    Shared by the dense :class:`VAE` and the interaction-network VAE; β is warmed up over
    ``warmup`` epochs and the KL term is normalised per input feature.
    """

    def _terms(self, m, xb, sample: bool):
        import torch

        mu, logvar = self._encode(m, xb)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        mse = ((m["decoder"](z) - xb) ** 2).mean(dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)
        return mu, mse, kl

    def _loss(self, m, xb, epoch=0):
        beta = self.beta * min(1.0, (epoch + 1) / max(1, self.warmup))
        _, mse, kl = self._terms(m, xb, sample=m.training)
        return (mse + beta * kl / N_FEATURES).mean()

    def _scores(self, m, xb):
        mu, mse, kl = self._terms(m, xb, sample=False)
        return {"mu2": (mu**2).sum(dim=1), "loss": mse + self.beta * kl / N_FEATURES, "kl": kl, "latent": mu}


class VAE(VariationalObjective, L1Estimator):
    """Dense VAE; ``hidden`` = encoder widths before the latent of size ``latent_dim``."""

    score_kinds = ("mu2", "loss", "kl")
    default_score = "mu2"

    def __init__(self, hidden: tuple[int, ...] = (24, 12), latent_dim: int = 8, beta: float = 1.0,
                 warmup: int = 3, epochs: int = 20, batch_size: int = 1024, lr: float = 3e-3, seed: int = 0):
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.beta = beta
        self.warmup = warmup
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def _build(self):
        import torch

        trunk = mlp([N_FEATURES, *self.hidden], last_activation=True)
        return torch.nn.ModuleDict({
            "trunk": trunk,
            "mu": torch.nn.Linear(self.hidden[-1], self.latent_dim),
            "logvar": torch.nn.Linear(self.hidden[-1], self.latent_dim),
            "decoder": mlp([self.latent_dim, *self.hidden[::-1], N_FEATURES]),
        })

    def _encode(self, m, xb):
        h = m["trunk"](xb)
        return m["mu"](h), m["logvar"](h).clamp(-10, 10)

    def dense_layers(self):
        """The deployed network: the encoder up to μ (score Σμ² computed on its output)."""
        self._check_fitted()
        layers = linear_layers(self.module_["trunk"]) + linear_layers([self.module_["mu"]])
        layers[-1].name = "mu"
        return layers

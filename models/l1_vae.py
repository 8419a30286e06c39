"""Dense VAE for L1 AD with the AXOL1TL score μ² = Σ_i μ_i² (encoder only, as deployed).

Encoder 57 → 24 → 12 → (μ, log σ²) of dimension 8 (≈ 3.5 k FLOPs for the μ head, see
:func:`lhcad.models.l1_metrics.dense_flops`); decoder mirrors it. Loss per event::

    L = MSE(x, x̂) + β · Σ_d max(free_bits, KL_d) / 57

(MSE = mean over the 57 features; KL_d = KL(N(μ_d, σ_d²) ‖ N(0, 1)) of latent dimension d, averaged
over the minibatch before the ``free_bits`` floor; divided by the number of features, so β = 1
weights both terms per input feature). β is linearly warmed up over the first ``warmup`` epochs.
Scores: ``mu2`` (Σμ², encoder only), ``loss`` (the full per-event loss with the decoder run on μ),
``kl``. With ``standardise`` (the recipe, the default) the encoder first maps each feature to zero
mean and unit variance on the training background, (x − m) / max(s, 0.01); the shift and scale are
saved with the model and folded into the first dense layer (:meth:`VAE.dense_layers`: same FLOPs).
The deploy stage unfolds the scale again (``deploy.ranges.unfold_input_scale``: the firmware reads
x / s, the mean offset stays exactly in the first bias), so quantisation sees the trained weights.

Recipe (issue 9; scan in ``.bench/l1.json`` → ``recipe``): β = 1, warm-up 3 epochs, free_bits = 0,
latent 8, Adam 3e-3 with cosine decay, 20 epochs, standardised encoder input. At β = 1 the posterior
collapses (0 of 8 dimensions carry > 0.01 nats of KL on background; RMS of μ ≈ 1e-3): the encoder is
trained to map the Standard-Model background onto μ ≈ 0, and μ² measures how far an event is driven
away from that point — like a Deep-SVDD one-class score, not a distance in an informative latent
space. Without the standardisation which features drive μ is set by the random initialisation: the
same recipe gave A→4ℓ AUC 0.95 / 0.74 / 0.64 for three seeds; with it, rarely-populated features (3rd
and 4th lepton, high jet multiplicity) enter with weight ≈ 1/s and dominate μ² for every seed.
Active latents (β ≤ 0.3, or free bits 0.1 at β = 1) make μ² measure the *typicality* inside the SM
manifold instead and the signals score *lower* than the background (validation AUC 0.26–0.60).

>>> import numpy as np
>>> p = np.abs(np.random.default_rng(0).normal(10, 3, (256, 19, 3))).astype(np.float32)
>>> vae = VAE(epochs=1).fit(p, progress=False)
>>> sorted(vae.score_all(p))
['kl', 'latent', 'loss', 'mu2']
"""

from __future__ import annotations

from lhcad.models.l1_base import (L1Estimator, add_standardisation, fit_standardisation, fold_standardisation,
                                  linear_layers, mlp)
from lhcad.models.l1_preprocess import N_FEATURES


class VariationalObjective:
    """MSE + β·KL training objective and the (μ², loss, KL) scores of a VAE with ``_encode(m, x)``.

    Shared by the dense :class:`VAE` and the interaction-network VAE; β is warmed up over
    ``warmup`` epochs and the KL term is normalised per input feature.
    """

    def _terms(self, m, xb, sample: bool, per_dim: bool = False):
        import torch

        mu, logvar = self._encode(m, xb)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        mse = ((m["decoder"](z) - xb) ** 2).mean(dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp())
        return mu, mse, (kl if per_dim else kl.sum(dim=1))

    def _loss(self, m, xb, epoch=0):
        beta = self.beta * min(1.0, (epoch + 1) / max(1, self.warmup))
        _, mse, kl = self._terms(m, xb, sample=m.training, per_dim=True)
        # free bits (Kingma et al. 2016): each latent dimension's batch-mean KL counts as at least
        # ``free_bits`` nats, so the optimiser gains nothing by collapsing a dimension below it
        kl_dims = kl.mean(dim=0).clamp(min=getattr(self, "free_bits", 0.0))
        return mse.mean() + beta * kl_dims.sum() / N_FEATURES

    def _scores(self, m, xb):
        mu, mse, kl = self._terms(m, xb, sample=False)
        return {"mu2": (mu**2).sum(dim=1), "loss": mse + self.beta * kl / N_FEATURES, "kl": kl, "latent": mu}


class VAE(VariationalObjective, L1Estimator):
    """Dense VAE; ``hidden`` = encoder widths before the latent of size ``latent_dim``."""

    score_kinds = ("mu2", "loss", "kl")
    default_score = "mu2"
    _optional_buffers = ("shift", "scale")

    def __init__(self, hidden: tuple[int, ...] = (24, 12), latent_dim: int = 8, beta: float = 1.0,
                 warmup: int = 3, epochs: int = 20, batch_size: int = 1024, lr: float = 3e-3, seed: int = 0,
                 free_bits: float = 0.0, standardise: bool = True):
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.beta = beta
        self.warmup = warmup
        self.free_bits = free_bits
        self.standardise = standardise
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def _build(self):
        import torch

        trunk = mlp([N_FEATURES, *self.hidden], last_activation=True)
        m = torch.nn.ModuleDict({
            "trunk": trunk,
            "mu": torch.nn.Linear(self.hidden[-1], self.latent_dim),
            "logvar": torch.nn.Linear(self.hidden[-1], self.latent_dim),
            "decoder": mlp([self.latent_dim, *self.hidden[::-1], N_FEATURES]),
        })
        add_standardisation(m, N_FEATURES)  # encoder input (x - shift) / scale; identity unless ``standardise``
        return m

    def _init_from_data(self, m, x_train) -> None:
        if self.standardise:
            fit_standardisation(m, x_train)

    def _encode(self, m, xb):
        h = m["trunk"]((xb - m.shift) / m.scale)
        return m["mu"](h), m["logvar"](h).clamp(-10, 10)

    def dense_layers(self):
        """The deployed network: the encoder up to μ (score Σμ² computed on its output).

        The input standardisation is folded into the first layer (W' = W / s, b' = b - (m / s) W),
        so the deployed encoder reads the preprocessed features and has the same FLOPs."""
        self._check_fitted()
        layers = linear_layers(self.module_["trunk"]) + linear_layers([self.module_["mu"]])
        layers[-1].name = "mu"
        return fold_standardisation(layers, self.module_)

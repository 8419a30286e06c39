"""R-ANODE: fit only the *signal* density on SR data, with the sideband background flow frozen.

The SR data likelihood is modelled as ``w · p_sig(x) + (1 − w) · p_bkg(x | m)`` with p_bkg the
frozen sideband flow, p_sig a small (unconditional) zuko flow and the signal fraction ``w`` learnable
(or fixed). Both densities live in the background flow's preprocessed space, so the Jacobian is common
and cancels. ``score = log p_sig − log p_bkg``.
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator, resolve_device
from lhcad.models.flows import ConditionalFlow, build_zuko_flow, train_density


class RANODE(Estimator):
    """R-ANODE estimator.

    Parameters
    ----------
    flow, transforms, hidden : the signal flow; epochs, batch_size, lr, val_fraction : training;
    w_init : initial signal fraction; learn_fraction : fit ``w`` (else keep ``w_init``);
    device, random_state.
    """

    def __init__(self, flow: str = "maf", transforms: int = 3, hidden: tuple[int, ...] = (32, 32),
                 epochs: int = 50, batch_size: int = 256, lr: float = 1e-3, val_fraction: float = 0.2,
                 w_init: float = 0.01, learn_fraction: bool = True, device: str = "auto",
                 random_state: int = 0):
        self.flow = flow
        self.transforms = transforms
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.val_fraction = val_fraction
        self.w_init = w_init
        self.learn_fraction = learn_fraction
        self.device = device
        self.random_state = random_state

    def _signal_module(self, n_features: int):
        return build_zuko_flow(self.flow, n_features, 0, self.transforms, tuple(self.hidden))

    def fit(self, X_sr, m_sr, background_flow: ConditionalFlow) -> RANODE:
        import torch

        if background_flow is None:
            raise ValueError("RANODE.fit needs the sideband-trained background_flow")
        torch.manual_seed(self.random_state)
        dev = resolve_device(self.device)
        self.background_flow_ = background_flow
        X_sr = np.asarray(X_sr, dtype=np.float64)
        with torch.no_grad():
            lb = torch.cat([background_flow.log_prob_latent(X_sr[s:s + 65536], np.asarray(m_sr)[s:s + 65536])
                            for s in range(0, len(X_sr), 65536)]).to(dev)
        z = torch.as_tensor(background_flow.pre_.transform(X_sr), dtype=torch.float32, device=dev)
        mod = self._signal_module(X_sr.shape[1]).to(dev)
        w0 = float(np.clip(self.w_init, 1e-6, 1 - 1e-6))
        theta = torch.tensor(np.log(w0 / (1 - w0)), dtype=torch.float32, device=dev,
                             requires_grad=self.learn_fraction)

        def nll(idx):
            logw = torch.nn.functional.logsigmoid(theta)
            log1mw = torch.nn.functional.logsigmoid(-theta)
            ls = mod().log_prob(z[idx])
            return -torch.logsumexp(torch.stack([logw + ls, log1mw + lb[idx]]), dim=0).mean()

        self.history_ = train_density(
            mod, nll, len(X_sr), epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            val_fraction=self.val_fraction, seed=self.random_state, device=dev,
            extra_params=[theta] if self.learn_fraction else [],
        )
        self.state_ = {k: v.detach().cpu() for k, v in mod.state_dict().items()}
        self.signal_fraction_ = float(torch.sigmoid(theta.detach()))
        self._module = mod.eval()
        self.fitted_ = True
        return self

    @property
    def module(self):
        if getattr(self, "_module", None) is None:
            mod = self._signal_module(len(self.background_flow_.pre_.lo_))
            mod.load_state_dict(self.state_)
            self._module = mod.to(resolve_device(self.device)).eval()
        return self._module

    def score_samples(self, X, m) -> np.ndarray:
        """log p_sig(x) − log p_bkg(x | m) (in the background flow's preprocessed space)."""
        import torch

        self._check_fitted()
        if m is None:
            raise ValueError("RANODE.score_samples needs the resonant mass m")
        X = np.asarray(X, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64)
        dev = resolve_device(self.device)
        out = np.empty(len(X))
        with torch.no_grad():
            for s in range(0, len(X), 65536):
                xb = X[s:s + 65536]
                z = torch.as_tensor(self.background_flow_.pre_.transform(xb), dtype=torch.float32, device=dev)
                ls = self.module().log_prob(z)
                lb = self.background_flow_.log_prob_latent(xb, m[s:s + 65536])
                out[s:s + 65536] = (ls - lb).cpu().numpy()
        return out

    def _get_state(self) -> dict:
        return {"signal": self.state_, "bkg": self.background_flow_.to_payload(),
                "w": self.signal_fraction_, "history": self.history_}

    def _set_state(self, state: dict) -> None:
        self.state_ = state["signal"]
        self.background_flow_ = ConditionalFlow.from_payload(state["bkg"])
        self.signal_fraction_ = float(state["w"])
        self.history_ = list(state.get("history", []))
        self._module = None

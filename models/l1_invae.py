"""Interaction-network VAE (IN-VAE) on the graph of the 19 L1 objects.

Graph: nodes = the 19 object slots with features (pT, η, φ) scaled as in
:class:`~lhcad.models.l1_preprocess.L1Preprocessor` + a one-hot object type (MET, e, μ, jet), so
F = 7; edges = all ordered pairs (i ≠ j), 342 of them, encoded as the interaction network's
sender/receiver matrices R_s, R_r (19 × 342 one-hot). Edges touching a zero-padded object are masked.

Encoder (Battaglia et al., "Interaction Networks", 2016; the CMS L1 AD IN-VAE)::

    B  = [X R_s ; X R_r]          (2F × E)  sender and receiver features per edge
    E' = f_R(B)                    edge MLP 2F → h → d_e        (per edge, masked)
    Ē  = E' R_rᵀ                   aggregation: sum of incoming messages per receiver node
    O  = f_O([X ; Ē])              node MLP F + d_e → h → d_o  (per node, masked)
    g  = Σ_nodes O                 graph readout
    μ, log σ² = Linear(g)          latent of dimension ``latent_dim``

The decoder is a dense MLP latent → 32 → 57 that reconstructs the flat input; loss and scores are as
in :class:`~lhcad.models.l1_vae.VAE` (``mu2``, ``loss``, ``kl``). Its FLOPs are dominated by the 342
edge-MLP evaluations (:meth:`INVAE.flops`), far above the dense VAE's: it is compared, not deployed.
"""

from __future__ import annotations

import numpy as np

from lhcad.models.l1_base import L1Estimator, mlp
from lhcad.models.l1_preprocess import N_FEATURES, object_types
from lhcad.models.l1_vae import VariationalObjective
from lhcad.store import L1_N_OBJECTS


def relation_matrices(n: int = L1_N_OBJECTS) -> tuple[np.ndarray, np.ndarray]:
    """Sender and receiver one-hot matrices (n, n(n-1)) of the fully connected directed graph."""
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    rs = np.zeros((n, len(pairs)), np.float32)
    rr = np.zeros((n, len(pairs)), np.float32)
    for e, (s, r) in enumerate(pairs):
        rs[s, e] = 1.0
        rr[r, e] = 1.0
    return rs, rr


class INVAE(VariationalObjective, L1Estimator):
    """Interaction-network VAE; see the module docstring for the architecture."""

    score_kinds = ("mu2", "loss", "kl")
    default_score = "mu2"
    score_batch_size = 4096  # 342 edges per event: keep the edge tensors small

    def __init__(self, edge_hidden: int = 16, edge_dim: int = 8, node_hidden: int = 16, node_dim: int = 8,
                 latent_dim: int = 8, beta: float = 1.0, warmup: int = 3, epochs: int = 10,
                 batch_size: int = 512, lr: float = 3e-3, seed: int = 0):
        self.edge_hidden = edge_hidden
        self.edge_dim = edge_dim
        self.node_hidden = node_hidden
        self.node_dim = node_dim
        self.latent_dim = latent_dim
        self.beta = beta
        self.warmup = warmup
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    n_node_features = 3 + 4

    def _build(self):
        import torch

        f = self.n_node_features
        m = torch.nn.ModuleDict({
            "edge": mlp([2 * f, self.edge_hidden, self.edge_dim], last_activation=True),
            "node": mlp([f + self.edge_dim, self.node_hidden, self.node_dim], last_activation=True),
            "mu": torch.nn.Linear(self.node_dim, self.latent_dim),
            "logvar": torch.nn.Linear(self.node_dim, self.latent_dim),
            "decoder": mlp([self.latent_dim, 32, N_FEATURES]),
        })
        rs, rr = relation_matrices()
        m.register_buffer("rs", torch.from_numpy(rs))
        m.register_buffer("rr", torch.from_numpy(rr))
        # R_s, R_r are one-hot: X R_s is a gather by sender index, E' R_rᵀ a scatter-add by receiver
        m.register_buffer("send_idx", torch.from_numpy(rs.argmax(0)))
        m.register_buffer("recv_idx", torch.from_numpy(rr.argmax(0)))
        m.register_buffer("types", torch.nn.functional.one_hot(torch.from_numpy(object_types()), 4).float())
        return m

    def _encode(self, m, xb):
        import torch

        nodes = xb.view(-1, L1_N_OBJECTS, 3)
        n_ev, n_obj = len(nodes), L1_N_OBJECTS
        mask = nodes[..., 0] > 0                                               # (B, 19)
        x = torch.cat([nodes, m.types.expand(n_ev, -1, -1)], dim=2)            # (B, 19, F)
        x = x * mask.unsqueeze(2).to(x.dtype)
        # Only edges between two present objects carry a message (the others are masked to 0), so the
        # edge MLP runs on those alone: a typical event has ~5 of 19 objects, ~20 of 342 edges.
        # X R_s / X R_r are gathers by sender / receiver index, E' R_rᵀ a scatter-add by receiver.
        ev, edge = (mask[:, m.send_idx] & mask[:, m.recv_idx]).nonzero(as_tuple=True)
        flat = x.reshape(n_ev * n_obj, -1)
        send, recv = ev * n_obj + m.send_idx[edge], ev * n_obj + m.recv_idx[edge]
        msg = m["edge"](torch.cat([flat[send], flat[recv]], dim=1))           # f_R on the live edges
        agg = torch.zeros(n_ev * n_obj, msg.shape[1], dtype=msg.dtype).index_add(0, recv, msg)
        agg = agg.view(n_ev, n_obj, -1)                                        # Ē = E' R_rᵀ
        out = m["node"](torch.cat([x, agg], dim=2)) * mask.unsqueeze(2).to(x.dtype)
        g = out.sum(dim=1)
        return m["mu"](g), m["logvar"](g).clamp(-10, 10)

    def flops(self) -> int:
        """Dense-count FLOPs of the encoder up to μ² (MAC = 2 FLOPs, + bias and ReLU per output).

        Per edge (342): edge MLP; per node (19): node MLP; readout sum; μ head; Σμ². The one-hot
        matrix products are gathers/scatter-adds, counted as one add per aggregated message value.
        """
        f, n, e = self.n_node_features, L1_N_OBJECTS, L1_N_OBJECTS * (L1_N_OBJECTS - 1)

        def dense(a, b, act=True):
            return 2 * a * b + b + (b if act else 0)

        per_edge = dense(2 * f, self.edge_hidden) + dense(self.edge_hidden, self.edge_dim)
        per_node = dense(f + self.edge_dim, self.node_hidden) + dense(self.node_hidden, self.node_dim)
        total = e * per_edge + e * self.edge_dim + n * per_node + n * self.node_dim
        total += dense(self.node_dim, self.latent_dim, act=False) + 2 * self.latent_dim
        return int(total)

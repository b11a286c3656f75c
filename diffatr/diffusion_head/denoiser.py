"""The attention denoiser of the diffusion head (method.md, "Denoiser"), the reference form.

Reads nothing, writes nothing: an nn.Module. This is the plain, readable computation, kept as
the definition; `fused.py` computes the same x0_hat without the (B, N, 2D) decoder input.
Notation (one direction; for a2t the audio is the query and the captions the candidates):

    x_k      noisy distribution over the N candidates, (B, N)
    k        diffusion step per query, (B,)
    c_q      query embedding, (B, D)
    C        candidate embeddings, (B, N, D), or (N, D) shared by every query
    pj(k)    step embedding: sinusoidal row k -> Linear -> SiLU -> Linear, (B, D)
    A        attention of the query over the candidates, softmax_N(Q . K_j + x_k[j]), (B, N)
    E        W_O(sum_j A_j V_j), one vector per query, (B, D)
    x0_hat   decoder([E, C_j]) + A, (B, N)
"""

import math

import torch
from torch import nn


def sinusoidal_table(n_steps: int, dim: int) -> torch.Tensor:
    """pe[k, 2i] = sin(k / 10000^(2i/D)), pe[k, 2i+1] = cos(k / 10000^(2i/D)); (K, D) float64."""
    position = torch.arange(n_steps, dtype=torch.float64).unsqueeze(1)  # (K, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_steps, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class Denoiser(nn.Module):
    """One direction of the DiffATR denoiser: x0_hat = m(x_k, k, query, candidates)."""

    def __init__(self, dim: int = 512, max_steps: int = 1000, init: bool = True):
        """init False: the weights are left uninitialised, for a checkpoint to fill (loading
        skips drawing ~5 M random numbers twice: ~0.05 s per denoiser)."""
        super().__init__()
        self.dim = dim
        self.register_buffer("step_table", sinusoidal_table(max_steps, dim), persistent=False)
        dev = None if init else "meta"  # meta: shapes only, no nn.Linear init drawn

        def linear(n_in: int, n_out: int, bias: bool = True) -> nn.Linear:
            return nn.Linear(n_in, n_out, bias=bias, device=dev)

        self.time_mlp = nn.Sequential(linear(dim, dim), nn.SiLU(), linear(dim, dim))
        self.q_proj = linear(dim, dim, bias=False)
        self.k_proj = linear(dim, dim, bias=False)
        self.v_proj = linear(dim, dim, bias=False)
        self.out_proj = linear(dim, dim)
        self.decoder = nn.Sequential(linear(2 * dim, 2 * dim), nn.ReLU(), linear(2 * dim, 1))
        for module in self.modules():
            if not isinstance(module, nn.Linear):
                continue
            if not init:  # plain CPU tensors (nn.Module.to_empty costs ~0.5 s on first use)
                for name, p in list(module.named_parameters(recurse=False)):
                    setattr(module, name, nn.Parameter(torch.empty(p.shape, dtype=p.dtype)))
                continue
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def step_embedding(self, k: torch.Tensor) -> torch.Tensor:
        """pj(k), (B, D). The table stays float64 and is cast to the weights' dtype here."""
        if k.device.type == "cpu" and (int(k.max()) >= len(self.step_table) or int(k.min()) < 0):
            raise ValueError(f"steps must lie in [0, {len(self.step_table)}), got {k.tolist()}")
        return self.time_mlp(self.step_table[k].to(self.time_mlp[0].weight.dtype))

    def forward(
        self, x_k: torch.Tensor, k: torch.Tensor, query: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        B, N = x_k.shape
        if candidates.dim() == 2:
            candidates = candidates.unsqueeze(0).expand(B, N, self.dim)  # (B, N, D)
        pj = self.step_embedding(k)  # (B, D)
        Q = self.q_proj(query + pj)  # (B, D)
        K = self.k_proj(candidates + pj.unsqueeze(1))  # (B, N, D)
        V = self.v_proj(candidates + pj.unsqueeze(1))  # (B, N, D)
        A = torch.softmax(torch.einsum("bd,bnd->bn", Q, K) + x_k, dim=-1)  # (B, N)
        E = self.out_proj(torch.einsum("bn,bnd->bd", A, V))  # (B, D)
        pair = torch.cat([E.unsqueeze(1).expand(B, N, self.dim), candidates], dim=-1)  # (B, N, 2D)
        logits = self.decoder(pair).squeeze(-1)  # (B, N)
        return logits + A

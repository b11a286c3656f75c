"""Both directions' denoisers trained as one batched computation: the training fast path.

Reads nothing, writes nothing. The t2a and a2t denoisers have the same shapes, so their weights
are stacked along a leading axis of 2 and one batched factorised forward (fused.py's algebra,
with bmm) gives both directions' losses: half the operator calls of two separate passes, each
twice as large. The stacked tensors are the autograd leaves and the optimiser's parameters;
every `Denoiser` parameter is rebound as a view of its row, so the modules (validation,
checkpoints) always see the current weights without copies.

Notation as fused.py, with a leading direction axis: query (2, B, D) is [text, audio], the
candidates C (2, B, D) are [audio, text], and x_k, eps (2, B, B), k (2, B).
"""

import warnings

import torch
import torch.nn.functional as F

from .denoiser import Denoiser

DIRECTIONS = ("t2a", "a2t")


class StackedPair:
    """The parameters of nets["t2a"] and nets["a2t"] stacked as (2, *shape) tensors.

    `leaves` holds the trainable ones (requires_grad, in Denoiser.named_parameters order);
    frozen parameters (the decoder's output bias) are stacked too but never trained.
    """

    def __init__(self, nets: dict[str, Denoiser], trainable: bool = True):
        first = nets[DIRECTIONS[0]]
        self.dim = first.dim
        self.step_table = first.step_table
        self.params: dict[str, torch.Tensor] = {}
        for name, p in first.named_parameters():
            both = [dict(nets[d].named_parameters())[name] for d in DIRECTIONS]
            stacked = torch.stack([q.detach() for q in both])  # (2, *shape), fresh storage
            if trainable and p.requires_grad:
                stacked.requires_grad_(True)
            for i, q in enumerate(both):
                q.data = stacked.detach()[i]  # the module's parameter is now a view of row i
            self.params[name] = stacked
        self.leaves = [t for t in self.params.values() if t.requires_grad]
        self.names = [n for n, t in self.params.items() if t.requires_grad]


def pair_loss(
    P: dict[str, torch.Tensor],
    step_table: torch.Tensor,
    query: torch.Tensor,
    cand: torch.Tensor,
    k: torch.Tensor,
    eps: torch.Tensor,
    abar: torch.Tensor,
    logit_scale: float,
) -> torch.Tensor:
    """L_G(t2a) + L_G(a2t) for one batch, both directions at once (method.md, "Training loss")."""
    B = query.shape[1]
    x0 = torch.eye(B, dtype=query.dtype, device=query.device)  # (B, N = B)
    a = abar[k].to(query.dtype).unsqueeze(-1)  # (2, B, 1)
    x_k = a.sqrt() * x0 + (1 - a).sqrt() * eps  # q_sample, (2, B, B)

    def linear(x, name, bias=None):  # x (2, R, in) @ W^T for each direction
        y = _Linear.apply(x, P[name])
        return y if bias is None else y + P[bias].unsqueeze(1)

    h = step_table[k].to(query.dtype)  # (2, B, D)
    pj = linear(F.silu(linear(h, "time_mlp.0.weight", "time_mlp.0.bias")), "time_mlp.2.weight")
    pj = pj + P["time_mlp.2.bias"].unsqueeze(1)  # (2, B, D)
    Q = linear(query + pj, "q_proj.weight")  # (2, B, D)
    KC = linear(cand, "k_proj.weight")  # (2, N, D)
    V = linear(torch.cat([cand, pj], dim=1), "v_proj.weight")  # [VC; W_V pj], (2, N + B, D)
    A = torch.softmax(torch.bmm(Q, KC.transpose(1, 2)) + x_k, dim=-1)  # (2, B, N)
    E = linear(torch.bmm(A, V[:, :B]) + V[:, B:], "out_proj.weight", "out_proj.bias")  # (2, B, D)
    HE, GC = _SplitDecoder.apply(E, cand, P["decoder.0.weight"])  # (2, B | N, 2D)
    GC = GC + P["decoder.0.bias"].unsqueeze(1)
    w2 = P["decoder.2.weight"][:, 0]  # (2, 2D)
    logits = _PairLogits.apply(HE, GC, w2) + P["decoder.2.bias"].view(2, 1, 1) + A  # (2, B, N)
    target = torch.arange(B, device=query.device).repeat(2)
    # mean over the 2B rows = (L_t2a + L_a2t) / 2
    return 2 * F.cross_entropy(logit_scale * logits.reshape(2 * B, B), target)


class _Linear(torch.autograd.Function):
    """x (2, R, in) @ W (2, out, in)^T, with dW computed as g^T x: (2, out, in) in W's own
    layout (autograd's x^T g, transposed, would cost a strided copy per weight and step)."""

    @staticmethod
    def forward(ctx, x, W):
        ctx.save_for_backward(x, W)
        return torch.bmm(x, W.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        dx = torch.bmm(g, W) if ctx.needs_input_grad[0] else None
        return dx, torch.bmm(g.transpose(1, 2), x)


@torch.library.custom_op("diffatr::split_weight_grad", mutates_args=())
def split_weight_grad(
    dHE: torch.Tensor, E: torch.Tensor, dGC: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """dW1 = [dHE^T E | dGC^T C], (2, 2D, 2D): each bmm writes straight into its half (an
    opaque op to inductor, which would otherwise build the halves and copy them, ~2x slower)."""
    D = E.shape[-1]
    dW1 = torch.empty(E.shape[0], dHE.shape[-1], 2 * D, dtype=E.dtype, device=E.device)
    torch.bmm(dHE.transpose(1, 2), E, out=dW1[:, :, :D])
    torch.bmm(dGC.transpose(1, 2), C, out=dW1[:, :, D:])
    return dW1


@split_weight_grad.register_fake
def _(dHE, E, dGC, C):
    return E.new_empty(E.shape[0], dHE.shape[-1], 2 * E.shape[-1])


class _SplitDecoder(torch.autograd.Function):
    """The decoder's first layer on its two input halves: HE = E W1_E^T (2, B, 2D) and
    GC = C W1_C^T (2, N, 2D), W1 = [W1_E | W1_C] (2, 2D, 2D); dW1 written in one piece."""

    @staticmethod
    def forward(ctx, E, C, W1):
        D = E.shape[-1]
        ctx.save_for_backward(E, C, W1)
        HE = torch.bmm(E, W1[:, :, :D].transpose(1, 2))
        return HE, torch.bmm(C, W1[:, :, D:].transpose(1, 2))

    @staticmethod
    def backward(ctx, dHE, dGC):
        E, C, W1 = ctx.saved_tensors
        dE = torch.bmm(dHE, W1[:, :, : E.shape[-1]]) if ctx.needs_input_grad[0] else None
        return dE, None, split_weight_grad(dHE.contiguous(), E, dGC.contiguous(), C)


class _PairLogits(torch.autograd.Function):
    """logit_bj = w2 . relu(HE_b + GC_j) for every pair, (2, B, N), without keeping the
    (2, B, N, 2D) activations for the backward pass: it recomputes them."""

    @staticmethod
    def forward(ctx, HE, GC, w2):
        ctx.save_for_backward(HE, GC, w2)
        Z = HE.unsqueeze(2) + GC.unsqueeze(1)  # (2, B, N, 2D)
        return (torch.relu(Z) * w2[:, None, None]).sum(-1)

    @staticmethod
    def backward(ctx, G):
        HE, GC, w2 = ctx.saved_tensors
        Z = HE.unsqueeze(2) + GC.unsqueeze(1)  # (2, B, N, 2D)
        M = (Z > 0).to(Z.dtype) * G.unsqueeze(-1)  # dlogit * relu'(Z)
        dw2 = (torch.relu(Z) * G.unsqueeze(-1)).sum((1, 2))
        return M.sum(2) * w2.unsqueeze(1), M.sum(1) * w2.unsqueeze(1), dw2


class CompiledLoss:
    """`pair_loss` through torch.compile (forward and backward fused by inductor) for batches of
    one size, eager for any other size (the short last batch) or when compiling fails."""

    def __init__(self, batch_size: int, enabled: bool = True):
        self.batch_size = batch_size
        self.enabled = enabled
        self._fn = torch.compile(pair_loss, dynamic=False) if enabled else None

    def __call__(self, P, step_table, query, cand, k, eps, abar, logit_scale) -> torch.Tensor:
        args = (P, step_table, query, cand, k, eps, abar, logit_scale)
        if self.enabled and query.shape[1] == self.batch_size:
            try:
                return self._fn(*args)
            except Exception as exc:  # a missing C++ compiler, an unsupported device, ...
                warnings.warn(f"torch.compile failed ({exc!s:.200}); eager training", stacklevel=2)
                self.enabled = False
        return pair_loss(*args)

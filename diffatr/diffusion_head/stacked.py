"""Both directions' denoisers, of one head or of several, trained as one batched computation.

Reads nothing, writes nothing. This is the training fast path. The t2a and a2t denoisers have the
same shapes, and so do the heads of an ablation that differ only in their seed, so their weights
are stacked along a leading group axis of G = 2H (head h's t2a at row 2h, its a2t at 2h + 1) and
one batched factorised forward (fused.py's algebra, with bmm) gives every group's loss: 1/G of
the operator calls of separate passes, each G times as large. The stacked tensors are the
autograd leaves and the optimiser's parameters; every `Denoiser` parameter is rebound as a view
of its row, so the modules (validation, checkpoints) always see the current weights.

Notation as fused.py, with the leading group axis: query (G, B, D) is [text, audio, text, ...],
the candidates C (G, N, D) are [audio, text, audio, ...], x_k and eps (G, B, N), k (G, B).
Query i's positive is candidate i (N >= B; training has N = B, a batch's items).
"""

import torch
import torch.nn.functional as F

from ..compiling import cacheable_autograd, is_compile_failure, warn_fallback
from . import native_loss
from .denoiser import Denoiser

DIRECTIONS = ("t2a", "a2t")


class StackedPair:
    """The parameters of several same-shaped denoisers stacked as (G, *shape) tensors.

    `nets` is {"t2a": ..., "a2t": ...} (one head, G = 2) or a list of denoisers in group order.
    `leaves` holds the trainable ones (requires_grad, in Denoiser.named_parameters order);
    frozen parameters (the decoder's output bias) are stacked too but never trained.
    """

    def __init__(self, nets: dict[str, Denoiser] | list[Denoiser], trainable: bool = True):
        nets = [nets[d] for d in DIRECTIONS] if isinstance(nets, dict) else list(nets)
        first = nets[0]
        self.groups = len(nets)
        self.dim = first.dim
        self.step_table = first.step_table
        self.params: dict[str, torch.Tensor] = {}
        for name, p in first.named_parameters():
            each = [dict(net.named_parameters())[name] for net in nets]
            stacked = torch.stack([q.detach() for q in each])  # (G, *shape), fresh storage
            if trainable and p.requires_grad:
                stacked.requires_grad_(True)
            for i, q in enumerate(each):
                q.data = stacked.detach()[i]  # the module's parameter is now a view of row i
            self.params[name] = stacked
        self.leaves = [t for t in self.params.values() if t.requires_grad]
        self.names = [n for n, t in self.params.items() if t.requires_grad]


def group_losses(
    P: dict[str, torch.Tensor],
    step_table: torch.Tensor,
    query: torch.Tensor,
    cand: torch.Tensor,
    k: torch.Tensor,
    eps: torch.Tensor,
    abar: torch.Tensor,
    logit_scale: float,
) -> torch.Tensor:
    """L_G of every group for one batch, (G,) (method.md, "Training loss")."""
    G, B = query.shape[:2]
    N = cand.shape[1]
    x0 = torch.eye(B, N, dtype=query.dtype, device=query.device)  # (B, N)
    a = abar[k].to(query.dtype).unsqueeze(-1)  # (G, B, 1)
    x_k = a.sqrt() * x0 + (1 - a).sqrt() * eps  # q_sample, (G, B, N)

    def linear(x, name, bias=None):  # x (G, R, in) @ W^T for each group
        y = _Linear.apply(x, P[name])
        return y if bias is None else y + P[bias].unsqueeze(1)

    h = step_table[k].to(query.dtype)  # (G, B, D)
    pj = linear(F.silu(linear(h, "time_mlp.0.weight", "time_mlp.0.bias")), "time_mlp.2.weight")
    pj = pj + P["time_mlp.2.bias"].unsqueeze(1)  # (G, B, D)
    Q = linear(query + pj, "q_proj.weight")  # (G, B, D)
    KC = linear(cand, "k_proj.weight")  # (G, N, D)
    V = _LinearTail.apply(cand, pj, P["v_proj.weight"])  # [VC; W_V pj], (G, N + B, D)
    A = torch.softmax(torch.bmm(Q, KC.transpose(1, 2)) + x_k, dim=-1)  # (G, B, N)
    E = linear(torch.bmm(A, V[:, :N]) + V[:, N:], "out_proj.weight", "out_proj.bias")  # (G, B, D)
    HE, GC = _SplitDecoder.apply(E, cand, P["decoder.0.weight"])  # (G, B | N, 2D)
    GC = GC + P["decoder.0.bias"].unsqueeze(1)
    w2 = P["decoder.2.weight"][:, 0]  # (G, 2D)
    logits = _PairLogits.apply(HE, GC, w2) + P["decoder.2.bias"].view(G, 1, 1) + A  # (G, B, N)
    target = torch.arange(B, device=query.device).repeat(G)
    ce = F.cross_entropy(logit_scale * logits.reshape(G * B, N), target, reduction="none")
    return ce.view(G, B).mean(1)


def pair_loss(P, step_table, query, cand, k, eps, abar, logit_scale) -> torch.Tensor:
    """The sum of every group's L_G: L_G(t2a) + L_G(a2t) for one head's pair of directions."""
    return group_losses(P, step_table, query, cand, k, eps, abar, logit_scale).sum()


class _Linear(torch.autograd.Function):
    """x (G, R, in) @ W (G, out, in)^T, with dW computed as g^T x: (G, out, in) in W's own
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


class _LinearTail(torch.autograd.Function):
    """[C; X] (G, N + R, in) @ W^T for constant C and trainable X in one bmm; the backward
    computes dX for X's rows only (dC would be N rows of matrix product thrown away)."""

    @staticmethod
    def forward(ctx, C, X, W):
        x = torch.cat([C, X], dim=1)  # (G, N + R, in)
        ctx.save_for_backward(x, W)
        ctx.n = C.shape[1]
        return torch.bmm(x, W.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, W = ctx.saved_tensors
        dX = torch.bmm(g[:, ctx.n :], W) if ctx.needs_input_grad[1] else None
        return None, dX, torch.bmm(g.transpose(1, 2), x)


@torch.library.custom_op("diffatr::split_weight_grad", mutates_args=())
def split_weight_grad(
    dHE: torch.Tensor, E: torch.Tensor, dGC: torch.Tensor, C: torch.Tensor
) -> torch.Tensor:
    """dW1 = [dHE^T E | dGC^T C], (G, 2D, 2D): each bmm writes straight into its half (an
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
    """The decoder's first layer on its two input halves: HE = E W1_E^T (G, B, 2D) and
    GC = C W1_C^T (G, N, 2D), W1 = [W1_E | W1_C] (G, 2D, 2D); dW1 written in one piece."""

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


@torch.library.custom_op("diffatr::materialize", mutates_args=())
def materialize(x: torch.Tensor) -> torch.Tensor:
    """A copy of x through an op opaque to inductor, so x is computed once into a buffer."""
    return x.clone()


@materialize.register_fake
def _(x):
    return torch.empty_like(x)


def _masked_sum(X: torch.Tensor, Y: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """sum_j [X_b + Y_j > 0] G_bj, (G, B, 2D), for X (G, B, 2D), Y (G, N, 2D), G (G, B, N)."""
    Z = X.unsqueeze(2) + Y.unsqueeze(1)  # (G, B, N, 2D)
    return ((Z > 0).to(Z.dtype) * G.unsqueeze(-1)).sum(2)


class _PairLogits(torch.autograd.Function):
    """logit_bj = w2 . relu(HE_b + GC_j) for every pair, (G, B, N), without keeping the
    (G, B, N, 2D) activations for the backward pass: it recomputes them."""

    @staticmethod
    def forward(ctx, HE, GC, w2):
        ctx.save_for_backward(HE, GC, w2)
        Z = HE.unsqueeze(2) + GC.unsqueeze(1)  # (G, B, N, 2D)
        return (torch.relu(Z) * w2[:, None, None]).sum(-1)

    @staticmethod
    def backward(ctx, G):
        HE, GC, w2 = ctx.saved_tensors
        # G (the cross-entropy's backward, a dozen operators and more per element) as a buffer:
        # inlined into the (G, B, N, 2D) sums below it would make inductor write those to
        # memory instead of fusing them
        G = materialize(G)
        # dHE sums relu'(Z) G over the candidates, dGC over the queries: written as the same
        # sum with the roles swapped (GC_j + HE_b == HE_b + GC_j exactly), so inductor emits
        # three reductions that each recompute Z from the small HE and GC, instead of writing
        # the (G, B, N, 2D) mask product to memory and reading it back twice
        dHE = _masked_sum(HE, GC, G) * w2.unsqueeze(1)
        dGC = _masked_sum(GC, HE, G.transpose(1, 2)) * w2.unsqueeze(1)
        dw2 = (torch.relu(HE.unsqueeze(2) + GC.unsqueeze(1)) * G.unsqueeze(-1)).sum((1, 2))
        return dHE, dGC, dw2


_COMPILED: list = []


class _CompiledOnFirstCall:
    """torch.compile(fn) made at the first call: torch.compile imports dynamo (~2.5 s), which a
    process training on the written-out path (native_loss.py) never needs."""

    def __init__(self, fn):
        self.fn, self.compiled = fn, None

    def __call__(self, *args):
        if self.compiled is None:
            self.compiled = torch.compile(self.fn, dynamic=False)
        return self.compiled(*args)


def _compiled_group_losses():
    """One torch.compile'd `group_losses` per process: every trainer (an ablation's many heads)
    shares its compiled graphs instead of compiling its own."""
    if not _COMPILED:
        _COMPILED.append(_CompiledOnFirstCall(group_losses))
    return _COMPILED[0]


class CompiledLoss:
    """`group_losses`' forward and backward on the fast path for batches of one shape (G groups
    of `batch_size`), eager autograd for any other shape (a short last batch, one head's own
    step), or after compiling failed (see diffatr/compiling.py).

    The fast path: on the CPU, float32, where a C compiler builds `pair_logits.c`, the
    forward and backward written out (native_loss.py: torch's bmm and a C kernel, nothing for
    inductor to compile); else (a GPU, another dtype, no C compiler) through torch.compile,
    forward and backward fused by inductor."""

    def __init__(self, batch_size: int, enabled: bool = True, groups: int = 2):
        self.batch_size, self.groups = batch_size, groups
        self.enabled = enabled
        self._fn = _compiled_group_losses() if enabled else None

    def __call__(self, P, step_table, query, cand, k, eps, abar, logit_scale) -> torch.Tensor:
        """The sum of the groups' losses (forward only: a backward compile failure surfaces in
        `backward`; `losses_and_grads` handles both)."""
        args = (P, step_table, query, cand, k, eps, abar, logit_scale)
        return self._losses(args).sum()

    def compiles(self, query: torch.Tensor) -> bool:
        """Whether a step on `query` (G, B, D) runs the fast path (written out or compiled)."""
        return self.enabled and tuple(query.shape[:2]) == (self.groups, self.batch_size)

    def native(self, P: dict[str, torch.Tensor], query: torch.Tensor) -> bool:
        """Whether a step on `query` with the weights P runs written out (native_loss.py): the
        fast path's shape, float32 CPU tensors, the C kernel built, P's trainable tensors
        autograd leaves (the gradients are set on them, not propagated)."""
        if not self.compiles(query):
            return False
        trainable = [p for p in P.values() if p.requires_grad]
        return all(p.is_leaf for p in trainable) and native_loss.usable([query, *P.values()])

    def _losses(self, args) -> torch.Tensor:
        if self.compiles(args[2]):
            try:
                with cacheable_autograd():
                    return self._fn(*args)
            except Exception as exc:
                if not is_compile_failure(exc):
                    raise
                warn_fallback(exc, "eager training")
                self.enabled = False
        return group_losses(*args)

    def losses_and_grads(self, P, step_table, query, cand, k, eps, abar, logit_scale):
        """Every group's loss (G,), detached, with the gradients of their sum in P's leaves.

        A compilation failure of the forward or of the backward graph (compiled at its first
        use) makes the step be redone eagerly. The leaves' gradients are first put back as they
        were: a graph broken into pieces compiles each piece's backward when it runs, so a
        later piece can fail after an earlier one has added its gradients (twice counted)."""
        args = (P, step_table, query, cand, k, eps, abar, logit_scale)
        if self.native(P, query):
            return native_loss.losses_and_grads(*args)
        if self.compiles(query):
            leaves = [p for p in P.values() if p.requires_grad]
            # None in training (the optimiser clears them); a caller's own are kept by value
            before = [None if p.grad is None else p.grad.clone() for p in leaves]
            try:
                with cacheable_autograd():
                    losses = self._fn(*args)
                    losses.sum().backward()
                return losses.detach()
            except Exception as exc:
                if not is_compile_failure(exc):
                    raise
                warn_fallback(exc, "eager training")
                self.enabled = False
                for p, grad in zip(leaves, before, strict=True):
                    p.grad = grad
        losses = group_losses(*args)
        losses.sum().backward()
        return losses.detach()

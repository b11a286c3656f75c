"""One optimiser step of the head as one pass over memory: grad-norm clip, AdamW and the EMA.

Reads nothing, writes nothing. At batch 32 the head's step is bound by memory traffic, not
arithmetic: every step reads and writes ~5 M parameters' weights, gradients, both Adam moments
and the EMA copy (~190 MB at float32). PyTorch's own trio (`clip_grad_norm_`, fused `AdamW`,
an EMA loop) makes ~4 passes over them; `fused_update` does the same arithmetic as one
torch.compile'd loop per tensor (plus one pass for the norm). The formulas are torch's:

    coef = min(1, max_norm / (||g||_2 + 1e-6)),  g <- coef * g           clip_grad_norm_
    p <- p (1 - lr wd);  m <- lerp(m, g, 1 - beta1);  v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)   AdamW, step t
    e <- decay e + (1 - decay) p                                            EMA of the weights

`torch.optim.AdamW` with `clip_grad_norm_` and the EMA loop is the oracle in the tests. With
compiling on, the step runs in C where a C compiler builds `adamw_ema.c` (native_optim.py: the
same two passes, no dynamo; ~0.3 s once per machine against torch.compile's ~20 s, and ~3.5 s
per process to load it), else as the torch code below, compiled; eager when compiling is off
or fails.

Memory: the step reads each gradient twice (the norm must be known before the first weight
changes) and reads and writes each weight, both moments and the EMA once; the moments live in
one contiguous buffer each. The norm is summed in a fixed partition (`NORM_CHUNKS` pieces per
tensor and head, then the pieces in order), so its bits, and so the whole step's, are not left
to how a compiler splits a reduction across threads (the update itself is elementwise).
"""

import math

import torch

from ..compiling import is_compile_failure, warn_fallback
from . import native_optim

BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as method.md's optimiser uses
EPS = 1e-8


BLOCK = 1 << 14  # values per partial sum of the norm: a fixed partition of its work


def _sum_squares(grads: list[torch.Tensor], heads: int) -> torch.Tensor:
    """Each head's sum of squared gradients over all its rows, (heads,).

    In fixed blocks of BLOCK values, then over the blocks: a head's sum over one tensor would
    be one full reduction, which torch splits into one partial per thread, so its rounding
    would follow the thread count that training's policy changes (diffatr/threads.py). Each
    block is summed by one thread, and the few block sums stay under torch's parallel grain.
    """
    sums = []
    for g in grads:
        x = (g * g).reshape(heads, -1)  # (heads, n)
        whole = x.shape[1] // BLOCK
        blocks = x[:, : whole * BLOCK].reshape(heads, whole, BLOCK).sum(2)  # (heads, whole)
        sums.append(blocks.sum(1) + x[:, whole * BLOCK :].sum(1))  # the rest: under a block
    return torch.stack(sums).sum(0)


def _rows(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A per-head vector (H,) as one value per row of p (R, ...), R = H * rows, broadcastable."""
    rows = p.shape[0] // x.shape[0]
    return x.unsqueeze(1).expand(-1, rows).reshape(-1, *([1] * (p.dim() - 1)))


def _update(params, grads, exp_avg, exp_avg_sq, ema, decays, lr, coef, step, bc2_sqrt, ema_decay):
    """lr, coef, step = lr / (1 - beta1^t) and bc2_sqrt: one value per head, (H,)."""
    beta1, beta2 = BETAS
    for p, g, m, v, e, wd in zip(params, grads, exp_avg, exp_avg_sq, ema, decays, strict=True):
        g = g * _rows(coef, p)
        if wd:
            p.mul_(1 - _rows(lr, p) * wd)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(m / (v.sqrt() / _rows(bc2_sqrt, p) + EPS) * _rows(step, p))
        e.mul_(ema_decay).add_(p * (1 - ema_decay))


def _flat_zeros(like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zeroed tensors shaped as `like`, views into one contiguous buffer."""
    flat = like[0].new_zeros(sum(p.numel() for p in like))
    views, start = [], 0
    for p in like:
        views.append(flat[start : start + p.numel()].view(p.shape))
        start += p.numel()
    return views


_COMPILED: list = []


def _compiled():
    """The compiled norm and update, one per process (shared by every optimiser)."""
    if not _COMPILED:
        # fullgraph: a graph break would run the first half's in-place updates before the
        # second half compiles; with one graph, compiling ends before anything is updated.
        # dynamic=False: one graph per stacked shape (a process training 1, then 3 heads) with
        # static sizes; the default would recompile the second shape with symbolic sizes,
        # measured ~2x slower per head (bench/bench_stacking.py)
        _COMPILED.extend([
            torch.compile(_sum_squares, dynamic=False),
            torch.compile(_update, fullgraph=True, dynamic=False),
        ])  # fmt: skip
    return tuple(_COMPILED)


class FusedAdamWEMA:
    """Clip + AdamW + EMA over `params` (autograd leaves) and their EMA copies `ema`.

    The leading axis of every tensor holds `heads` independent heads' rows (their directions),
    head h owning rows [h * R / heads, (h + 1) * R / heads): each head has its own gradient
    norm (clipped over its rows only, both directions together, as one head alone), its own
    step count and learning rate, so stepping H heads at once equals stepping each alone.
    `weight_decay` applies to tensors of at least 2 dims per row (matrices; the stacked layout
    adds one leading axis, given by `stacked_dims`), as `make_optimizer` does.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        ema: list[torch.Tensor],
        weight_decay: float,
        max_norm: float,
        ema_decay: float,
        compiled: bool = True,
        stacked_dims: int = 1,
        heads: int = 1,
    ):
        self.params, self.ema, self.heads = params, ema, heads
        self.decays = [weight_decay if p.dim() - stacked_dims >= 2 else 0.0 for p in params]
        self.exp_avg = _flat_zeros(params)  # views into one buffer each
        self.exp_avg_sq = _flat_zeros(params)
        self.max_norm, self.ema_decay = max_norm, ema_decay
        self.steps = [0] * heads  # each head's step count t
        self.compiled = compiled
        self._plans: dict[tuple, native_optim.Plan] = {}

    @property
    def _norm(self):
        return _compiled()[0] if self.compiled else _sum_squares

    @property
    def _update(self):
        return _compiled()[1] if self.compiled else _update

    def native(self) -> bool:
        """Whether a step of every head runs in C (native_optim.py): nothing to compile."""
        state = [*self.params, *self.exp_avg, *self.exp_avg_sq, *self.ema]
        return self.compiled and native_optim.usable(state)

    @property
    def t(self) -> int:
        """The step count of head 0 (of the only head, for one)."""
        return self.steps[0]

    @torch.no_grad()
    def step(self, lr: float | list[float], head: int | None = None) -> None:
        """One step of every head (lr: one value, or one per head), or of head `head` alone."""
        heads = range(self.heads) if head is None else [head]
        lrs = [lr] * len(heads) if isinstance(lr, (int, float)) else list(lr)
        if len(lrs) != len(heads):
            raise ValueError(f"{len(lrs)} learning rates for {len(heads)} head(s)")
        sel = [slice(None)] * len(self.params)
        if head is not None:  # that head's rows: views, updated in place
            rows = self.params[0].shape[0] // self.heads
            sel = [slice(head * rows, (head + 1) * rows)] * len(self.params)
        tensors = [
            [x[s] for x, s in zip(xs, sel, strict=True)]
            for xs in (self.params, [p.grad for p in self.params], self.exp_avg, self.exp_avg_sq,
                       self.ema)
        ]  # fmt: skip
        for h in heads:
            self.steps[h] += 1
        t = [self.steps[h] for h in heads]
        n = len(heads)
        if self.compiled and native_optim.usable([x for xs in tensors for x in xs]):
            self._native(tensors, lrs, t, n)
        elif head is not None:  # a head's own step (its short last batch): eager, on views
            self._apply(tensors, lrs, t, n, _sum_squares, _update)
        else:
            try:
                self._apply(tensors, lrs, t, n, self._norm, self._update)
            except Exception as exc:
                if not (self.compiled and is_compile_failure(exc)):
                    raise
                # compilation failed before the compiled code ran: no state has changed
                warn_fallback(exc, "eager optimiser")
                self.compiled = False
                self._apply(tensors, lrs, t, n, self._norm, self._update)
        for p in self.params:
            p.grad = None

    def _scalars(self, lrs: list[float], t: list[int]) -> torch.Tensor:
        """lr, lr / (1 - beta1^t) and sqrt(1 - beta2^t) per head, (3, n): from float64 to the
        weights' dtype once (a changed Python float would mean a recompile)."""
        step = [lr / (1 - BETAS[0] ** s) for lr, s in zip(lrs, t, strict=True)]
        bc2_sqrt = [math.sqrt(1 - BETAS[1] ** s) for s in t]
        scalars = torch.tensor([lrs, step, bc2_sqrt], dtype=torch.float64)
        return scalars.to(device=self.params[0].device, dtype=self.params[0].dtype)

    def _native(self, tensors, lrs: list[float], t: list[int], n: int) -> None:
        """The step in C (native_optim.py): the same arithmetic, ~0.3 s to build once per
        machine where the compiled twin costs every process seconds of dynamo and inductor."""
        sizes = [p.numel() for p in tensors[0]]
        key = (tuple(sizes), n)
        if key not in self._plans:
            decays = [float(d) for d in self.decays]
            self._plans[key] = native_optim.Plan(sizes, n, BLOCK, decays)
        lr, step_size, bc2 = self._scalars(lrs, t)
        beta1, beta2 = BETAS
        consts = (1 - beta1, beta2, 1 - beta2, EPS, self.ema_decay, 1 - self.ema_decay)
        native_optim.step(self._plans[key], tensors, lr, step_size, bc2, self.max_norm, consts)

    def _apply(self, tensors, lrs: list[float], t: list[int], n: int, norm_fn, update) -> None:
        params, grads, exp_avg, exp_avg_sq, ema = tensors
        lr, step_size, bc2 = self._scalars(lrs, t)
        norm = norm_fn(grads, n).sqrt()  # (n,)
        coef = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        update(
            params, grads, exp_avg, exp_avg_sq, ema, self.decays,
            lr, coef, step_size, bc2, self.ema_decay,
        )  # fmt: skip

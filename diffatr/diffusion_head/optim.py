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

`torch.optim.AdamW` with `clip_grad_norm_` and the EMA loop is the oracle in the tests and the
path taken when compiling is off or fails.
"""

import math
import warnings

import torch

BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as method.md's optimiser uses
EPS = 1e-8


def _sum_squares(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([(g * g).sum() for g in grads]).sum()


def _update(params, grads, exp_avg, exp_avg_sq, ema, decays, lr, coef, bc1, bc2_sqrt, ema_decay):
    beta1, beta2 = BETAS
    for p, g, m, v, e, wd in zip(params, grads, exp_avg, exp_avg_sq, ema, decays, strict=True):
        g = g * coef
        if wd:
            p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.sub_(m / (v.sqrt() / bc2_sqrt + EPS) * (lr / bc1))
        e.mul_(ema_decay).add_(p * (1 - ema_decay))


class FusedAdamWEMA:
    """Clip + AdamW + EMA over `params` (autograd leaves) and their EMA copies `ema`.

    `weight_decay` applies to tensors of at least 2 dims per direction (matrices; the stacked
    layout adds one leading axis, given by `stacked_dims`), as `make_optimizer` does.
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
    ):
        self.params, self.ema = params, ema
        self.decays = [weight_decay if p.dim() - stacked_dims >= 2 else 0.0 for p in params]
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.max_norm, self.ema_decay = max_norm, ema_decay
        self.t = 0
        self.compiled = compiled
        self._norm = torch.compile(_sum_squares) if compiled else _sum_squares
        self._update = torch.compile(_update) if compiled else _update

    @torch.no_grad()
    def step(self, lr: float) -> None:
        grads = [p.grad for p in self.params]
        self.t += 1
        device = self.params[0].device
        scalars = {
            "lr": lr,
            "bc1": 1 - BETAS[0] ** self.t,
            "bc2_sqrt": math.sqrt(1 - BETAS[1] ** self.t),
        }
        try:
            norm = self._norm(grads).sqrt()
            coef = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
            # per-step scalars as 0-d tensors: a changed Python float would mean a recompile
            t = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in scalars.items()}
            self._update(
                self.params, grads, self.exp_avg, self.exp_avg_sq, self.ema, self.decays,
                t["lr"], coef, t["bc1"], t["bc2_sqrt"], self.ema_decay,
            )  # fmt: skip
        except Exception as exc:
            if not self.compiled:
                raise
            warnings.warn(f"torch.compile failed ({exc!s:.200}); eager optimiser", stacklevel=2)
            self.compiled = False
            self._norm, self._update = _sum_squares, _update
            self.t -= 1
            self.step(lr)
        for p in self.params:
            p.grad = None

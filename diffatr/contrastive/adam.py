"""Phase 1's optimiser: torch's fused Adam kernel, called as `torch.optim.Adam(fused=True)` calls
it, without the `torch.optim` classes; and StepLR's learning rate.

Reads nothing, writes nothing. `torch.optim.Optimizer`'s constructor imports dynamo (its
`add_param_group` is wrapped by `torch._disable_dynamo`): 1.5-2.6 s measured on the 2-core
development machine, in every process that trains phase 1 (`train-contrastive`, `ablate`, the
demo), where nothing else needs dynamo. The step here is the same aten kernel
(`torch._fused_adam_`, one pass over every parameter) with the same arguments and state (the
moments as zeros like each parameter, the step count a float32 scalar tensor incremented
before the kernel), so the same bytes: `tests/test_contrastive_adam.py` holds it and `step_lr`
bitwise to `torch.optim.Adam(fused=True)` with `StepLR` across a decay.
"""

import torch


class FusedAdam:
    """Adam (no weight decay, no amsgrad) over `params`, with a learning rate set per step."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.exp_avg: list[torch.Tensor | None] = [None] * len(self.params)
        self.exp_avg_sq: list[torch.Tensor | None] = [None] * len(self.params)
        self.steps: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One step of every parameter with a gradient (state made at its first step, as
        torch's Adam makes it)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        for i in live:
            if self.steps[i] is None:
                p = self.params[i]
                self.exp_avg[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.exp_avg_sq[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.steps[i] = torch.zeros((), dtype=torch.float32, device=p.device)
        if not live:
            return
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],
            [self.exp_avg[i] for i in live],
            [self.exp_avg_sq[i] for i in live],
            [],
            steps,
            amsgrad=False,
            lr=self.lr,
            beta1=self.betas[0],
            beta2=self.betas[1],
            weight_decay=0.0,
            eps=self.eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


def step_lr(lr: float, epoch: int, step_size: int, gamma: float) -> float:
    """StepLR's learning rate for `epoch` (1-based): times gamma after every `step_size` epochs,
    multiplied in turn as StepLR does (not gamma ** n: the float can differ)."""
    for done in range(1, epoch):
        if done % step_size == 0:
            lr = lr * gamma
    return lr

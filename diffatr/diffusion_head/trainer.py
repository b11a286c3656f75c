"""One training step of the diffusion head, on the fast path or the naive reference path.

Reads nothing, writes nothing: `HeadTrainer` owns both directions' denoisers, their EMA copies,
the optimiser state and the position in the LR schedule. Per batch of B (caption, clip) pairs
with distinct clips, for each direction (t2a: captions query the batch's clips; a2t: clips
query the batch's captions): x0 = I_B, k ~ U[0, K), eps ~ N(0, I), x_k = q_sample(x0, k) and
L_G = CE(logit_scale * x0_hat, diag); the directions' losses are summed. AdamW with weight
decay on matrices only, 10% linear warm-up then cosine decay, grad-norm clip, EMA.

- fast (cfg.fused): both directions as one batched factorised computation (`stacked.py`),
  forward and backward written out with the pair logits in C on the CPU (`native_loss.py`),
  torch.compile'd elsewhere, then one fused clip + AdamW + EMA pass (`optim.py`, in C on the
  CPU);
- several heads (`seeds`): the same fast path with every head's directions on the stacked
  axis, each head's optimiser state, clipping, schedule and random draws its own;
- naive (cfg.fused False): `Denoiser.forward` per direction, `torch.optim.AdamW`,
  `clip_grad_norm_` and a per-parameter EMA loop: the reference the tests hold the fast path to.

Both draw k and eps from the same generator in the same order, so they train the same weights.
"""

import copy
from dataclasses import replace

import torch
import torch.nn.functional as F

from ..compiling import first_call
from ..lr import warmup_cosine
from .checkpoint import new_denoiser
from .config import HeadConfig
from .denoiser import Denoiser
from .optim import FusedAdamWEMA
from .schedule import alphas_cumprod, make_betas, q_sample
from .stacked import DIRECTIONS, CompiledLoss, StackedPair


def init_nets(dim: int, cfg: HeadConfig, device: torch.device | str = "cpu") -> dict:
    """Both directions' denoisers, initialised from cfg.seed (method.md: N(0, 0.02^2), 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        nets = {d: new_denoiser(dim, cfg.K).to(device) for d in ("t2a", "a2t")}
    for net in nets.values():
        # The decoder's output bias shifts every candidate's x0_hat alike, so CE's gradient for
        # it is exactly zero; Adam would turn its rounding noise into full-size steps, and the
        # drift moves x0_hat against the [-1, 1] clamp of sampling. It stays at its init (0).
        net.decoder[2].bias.requires_grad_(False)
    return nets


def make_optimizer(nets: dict[str, Denoiser], cfg: HeadConfig) -> torch.optim.AdamW:
    """The reference optimiser: torch's AdamW, weight decay on matrices only."""
    params = [p for net in nets.values() for p in net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def direction_loss(m: Denoiser, query, candidates, k, eps, abar, cfg: HeadConfig) -> torch.Tensor:
    """L_G for one direction through the reference denoiser: query i's positive is candidate i."""
    B = len(query)
    x_k = q_sample(torch.eye(B, device=query.device), k, abar, eps)
    x0_hat = m(x_k, k, query, candidates)  # (B, N = B)
    return F.cross_entropy(cfg.logit_scale * x0_hat, torch.arange(B, device=query.device))


class HeadTrainer:
    """One head or several: their directions, EMA, optimiser state and schedules; `step` trains.

    With `seeds`, H = len(seeds) independent heads (cfg with each seed) share one stacked graph
    (cfg.fused only): each keeps its own weights, Adam moments, EMA, step count, learning rate
    and gradient clipping, and draws its own k and eps from its own generator, so each equals
    the head trained alone with that seed (up to float rounding of the larger batched ops).
    `nets` / `ema` are the first head's; `heads_nets` / `heads_ema` every head's.
    """

    def __init__(self, dim: int, cfg: HeadConfig, total_steps, device="cpu", seeds=None):
        """total_steps: the schedule's length, one for every head or one per head."""
        self.cfg, self.device = cfg, torch.device(device)
        self.seeds = [cfg.seed] if seeds is None else list(seeds)
        H = self.heads = len(self.seeds)
        if H > 1 and not cfg.fused:
            raise ValueError("several heads train together on the fused path only")
        self.heads_nets = [init_nets(dim, replace(cfg, seed=s), device) for s in self.seeds]
        self.heads_ema = [
            {d: copy.deepcopy(net).eval() for d, net in nets.items()} for nets in self.heads_nets
        ]
        self.nets, self.ema = self.heads_nets[0], self.heads_ema[0]
        self.abar = alphas_cumprod(make_betas(cfg.schedule, cfg.K)).to(device)
        totals = [total_steps] * H if isinstance(total_steps, int) else list(total_steps)
        self.lr_factors = [warmup_cosine(n, cfg.warmup) for n in totals]  # each head's schedule
        self.head_steps = [0] * H  # optimiser steps taken by each head
        if cfg.fused:
            order = [nets[d] for nets in self.heads_nets for d in DIRECTIONS]
            self.pair = StackedPair(order)
            ema_order = [ema[d] for ema in self.heads_ema for d in DIRECTIONS]
            ema_pair = StackedPair(ema_order, trainable=False)
            ema = [ema_pair.params[name] for name in self.pair.names]
            self.opt = FusedAdamWEMA(
                self.pair.leaves, ema, cfg.weight_decay, cfg.grad_clip, cfg.ema, cfg.compiled,
                heads=H,
            )  # fmt: skip
            self.loss_fn = CompiledLoss(cfg.batch_size, cfg.compiled, groups=2 * H)
        else:
            self.params = [p for n in self.nets.values() for p in n.parameters() if p.requires_grad]
            self.opt = make_optimizer(self.nets, cfg)

    @property
    def steps_done(self) -> int:
        return self.head_steps[0]

    def _draws(self, B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """k (2, B) and eps (2, B, B): k then eps, t2a first, the order every path shares."""
        draws = []
        for _ in DIRECTIONS:
            k = torch.randint(0, self.cfg.K, (B,), generator=g)
            draws.append((k.to(self.device), torch.randn((B, B), generator=g).to(self.device)))
        return tuple(torch.stack(x) for x in zip(*draws, strict=True))

    def _lr(self, head: int) -> float:
        lr = self.cfg.lr * self.lr_factors[head](self.head_steps[head])
        self.head_steps[head] += 1
        return lr

    def step(self, text: torch.Tensor, audio: torch.Tensor, g: torch.Generator) -> float:
        """One optimiser step of the (only) head on B pairs (text[i], audio[i]): L_t2a + L_a2t."""
        if self.heads != 1:
            raise ValueError(f"{self.heads} heads: use step_heads")
        if self.cfg.fused:
            return self.step_heads([(text, audio, g)])[0]
        cfg = self.cfg
        k, eps = self._draws(len(text), g)
        lr = self._lr(0)
        loss = direction_loss(self.nets["t2a"], text, audio, k[0], eps[0], self.abar, cfg)
        loss = loss + direction_loss(self.nets["a2t"], audio, text, k[1], eps[1], self.abar, cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        with torch.no_grad():
            for d, net in self.nets.items():
                for e, p in zip(self.ema[d].parameters(), net.parameters(), strict=True):
                    e.mul_(cfg.ema).add_(p.detach(), alpha=1 - cfg.ema)
        return loss.item()

    def step_heads(self, batches: list) -> list[float | None]:
        """One step of each head h with a batch: batches[h] = (text, audio, g) or None (no
        batch left for h this epoch). Returns each head's L_t2a + L_a2t (None where no step).

        When every head has a batch of the same size, all step as one stacked computation
        (compiled for full batches); otherwise each head with a batch steps alone on its rows.
        """
        if len(batches) != self.heads:
            raise ValueError(f"{len(batches)} batches for {self.heads} heads")
        sizes = {len(b[0]) for b in batches if b is not None}
        if None not in batches and len(sizes) == 1:
            return self._stacked_step(batches, range(self.heads))
        losses: list[float | None] = [None] * self.heads
        for h, batch in enumerate(batches):
            if batch is not None:
                losses[h] = self._stacked_step([batch], [h])[0]
        return losses

    def _stacked_step(self, batches: list, heads) -> list[float]:
        draws = [self._draws(len(t), g) for t, _, g in batches]  # each head's own generator
        k, eps = (torch.cat(x) for x in zip(*draws, strict=True))
        query = torch.stack([x for t, a, _ in batches for x in (t, a)])  # (2h, B, D)
        cand = torch.stack([x for t, a, _ in batches for x in (a, t)])
        lrs = [self._lr(h) for h in heads]
        P = self.pair.params
        if len(heads) != self.heads:  # one head's own step: its rows of the stacked weights
            h = heads[0]
            P = {name: p[2 * h : 2 * h + 2] for name, p in P.items()}
        args = (self.pair.step_table, query, cand, k, eps, self.abar, self.cfg.logit_scale)

        def train_step() -> torch.Tensor:
            losses = self.loss_fn.losses_and_grads(P, *args)  # (2h,)
            if len(heads) == self.heads:
                self.opt.step(lrs)
            else:
                self.opt.step(lrs, head=heads[0])
            return losses

        native = self.loss_fn.native(P, query) and self.opt.native()  # nothing to compile
        if len(heads) == self.heads and self.loss_fn.compiles(query) and not native:
            # the first full step compiles (or loads) forward, backward and update: say so
            key = f"head_train_step_{self.heads}x{self.cfg.batch_size}"
            losses = first_call(key, "the head's training step", train_step)
        else:
            losses = train_step()
        return losses.view(-1, 2).sum(1).tolist()

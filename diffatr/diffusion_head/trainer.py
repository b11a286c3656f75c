"""One training step of the diffusion head, on the fast path or the naive reference path.

Reads nothing, writes nothing: `HeadTrainer` owns both directions' denoisers, their EMA copies,
the optimiser state and the position in the LR schedule. Per batch of B (caption, clip) pairs
with distinct clips, for each direction (t2a: captions query the batch's clips; a2t: clips
query the batch's captions): x0 = I_B, k ~ U[0, K), eps ~ N(0, I), x_k = q_sample(x0, k) and
L_G = CE(logit_scale * x0_hat, diag); the directions' losses are summed. AdamW with weight
decay on matrices only, 10% linear warm-up then cosine decay, grad-norm clip, EMA.

- fast (cfg.fused): both directions as one batched factorised computation (`stacked.py`),
  forward and backward torch.compile'd, then one fused clip + AdamW + EMA pass (`optim.py`);
- naive (cfg.fused False): `Denoiser.forward` per direction, `torch.optim.AdamW`,
  `clip_grad_norm_` and a per-parameter EMA loop: the reference the tests hold the fast path to.

Both draw k and eps from the same generator in the same order, so they train the same weights.
"""

import copy

import torch
import torch.nn.functional as F

from ..lr import warmup_cosine
from .checkpoint import new_denoiser
from .config import HeadConfig
from .denoiser import Denoiser
from .optim import FusedAdamWEMA
from .schedule import alphas_cumprod, make_betas, q_sample
from .stacked import CompiledLoss, StackedPair


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
    """Both directions, their EMA, the optimiser and the schedule; `step` trains on one batch."""

    def __init__(self, dim: int, cfg: HeadConfig, total_steps: int, device="cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.nets = init_nets(dim, cfg, device)
        self.ema = {d: copy.deepcopy(net).eval() for d, net in self.nets.items()}
        self.abar = alphas_cumprod(make_betas(cfg.schedule, cfg.K)).to(device)
        self.lr_factor = warmup_cosine(total_steps, cfg.warmup)
        self.steps_done = 0
        if cfg.fused:
            self.pair = StackedPair(self.nets)
            ema_pair = StackedPair(self.ema, trainable=False)
            ema = [ema_pair.params[name] for name in self.pair.names]
            self.opt = FusedAdamWEMA(
                self.pair.leaves, ema, cfg.weight_decay, cfg.grad_clip, cfg.ema, cfg.compiled
            )
            self.loss_fn = CompiledLoss(cfg.batch_size, cfg.compiled)
        else:
            self.params = [p for n in self.nets.values() for p in n.parameters() if p.requires_grad]
            self.opt = make_optimizer(self.nets, cfg)

    def step(self, text: torch.Tensor, audio: torch.Tensor, g: torch.Generator) -> float:
        """One optimiser step on B pairs (text[i], audio[i]); returns L_t2a + L_a2t."""
        cfg, B = self.cfg, len(text)
        draws = []
        for _ in ("t2a", "a2t"):  # k then eps, t2a first: the order both paths share
            k = torch.randint(0, cfg.K, (B,), generator=g)
            draws.append((k.to(self.device), torch.randn((B, B), generator=g).to(self.device)))
        lr = cfg.lr * self.lr_factor(self.steps_done)
        self.steps_done += 1
        if cfg.fused:
            k, eps = (torch.stack(x) for x in zip(*draws, strict=True))
            query, cand = torch.stack([text, audio]), torch.stack([audio, text])
            loss = self.loss_fn(
                self.pair.params, self.pair.step_table, query, cand, k, eps, self.abar,
                cfg.logit_scale,
            )  # fmt: skip
            loss.backward()
            self.opt.step(lr)
            return loss.item()
        loss = direction_loss(self.nets["t2a"], text, audio, *draws[0], self.abar, cfg)
        loss = loss + direction_loss(self.nets["a2t"], audio, text, *draws[1], self.abar, cfg)
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

"""Settings of the diffusion head: one frozen dataclass for training, one for re-ranking.

`asdict()` of both goes into every checkpoint and result file, so any artefact says how it was
made. Defaults are the faithful ones of method.md (DiffusionRet's optimiser, K = 50, cosine).
"""

from dataclasses import dataclass

from ..errors import ConfigError
from .schedule import SCHEDULES

MODES = ("fusion", "gen")


@dataclass(frozen=True)
class HeadConfig:
    K: int = 50  # diffusion steps, trained and sampled (the paper's Table 6 varies it)
    schedule: str = "cosine"  # "cosine" (Nichol & Dhariwal) or "linear" (DDPM)
    normalize: bool = False  # L2-normalise features before the denoiser (method.md: off)
    epochs: int = 5  # DiffusionRet's schedule
    batch_size: int = 32  # queries = candidates per batch (paper: 32 AudioCaps, 24 Clotho)
    lr: float = 1e-4  # AdamW peak learning rate
    weight_decay: float = 0.2  # on weight matrices only, not on biases
    warmup: float = 0.1  # fraction of all steps spent in linear warm-up, then cosine decay
    grad_clip: float = 1.0  # max global gradient norm
    ema: float = 0.99  # EMA decay of the weights; the EMA weights are validated and saved
    logit_scale: float = 100.0  # L_G = CE(logit_scale * x0_hat, positive)
    seed: int = 0  # initialisation, batch order, steps k and noise eps
    fused: bool = True  # train through the factorised denoiser (same math, ~no (B, N, 2D) work)
    compiled: bool = True  # the fused step's fast path: C kernels on the CPU, else torch.compile
    device: str = "auto"  # "auto" = CUDA when present, else CPU

    def check(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.K < 1 or self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("K and epochs must be >= 1 and the batch size >= 2")
        if not self.lr >= 0:  # 0 trains nothing: the frozen baseline of a test
            raise ConfigError(f"the learning rate must be >= 0, got {self.lr}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"the EMA decay must be in [0, 1), got {self.ema}")
        if not 0 <= self.warmup <= 1:
            raise ConfigError(f"warm-up is a fraction of all steps, in [0, 1], got {self.warmup}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"the weight decay must be >= 0, got {self.weight_decay}")
        if not self.grad_clip > 0:
            raise ConfigError(f"the gradient clip norm must be positive, got {self.grad_clip}")
        if not self.logit_scale > 0:
            raise ConfigError(f"logit_scale must be positive, got {self.logit_scale}")


@dataclass(frozen=True)
class RerankConfig:
    topk: int | None = 32  # candidates re-ranked per query; None = the whole gallery
    alpha: float = 1.0  # fusion weight: S' = S + alpha * softmax(x0_hat / temperature)
    temperature: float = 1.0  # softmax temperature of the boost
    steps: int | None = None  # DDIM steps; None = all K (fewer: the strided "leading" subset)
    eta: float = 0.0  # DDIM eta; 0 = deterministic given x_K
    seed: int = 0  # x_K (and DDIM noise) per query row, independent of block sizes
    mode: str = "fusion"  # "fusion" (Gen+Dis) or "gen": order the top-k by the head alone
    compiled: bool = True  # torch.compile the per-pair loop (falls back to eager on failure)
    # queries sampled together. Measured on 2 cores: 64 ~ 128 ~ 256 > 16 on a quiet machine; on
    # a loaded one (load ~18) 1,024 t2a rows took 80-129 s in blocks of 64, 31-40 s in blocks of
    # 256 and 19-22 s in blocks of 1,024 (fewer, larger kernel calls: fewer OpenMP barriers and
    # dynamo/wrapper calls). 256 keeps a block's gathered constants ~85 MB at D = 512, top-32.
    query_block: int = 256

    def check(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.topk is not None and self.topk < 1:
            raise ConfigError(f"top-k must be at least 1 (or all), got {self.topk}")
        if not self.alpha >= 0:
            raise ConfigError(f"alpha must be >= 0 (so the top-k stays on top), got {self.alpha}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be positive, got {self.temperature}")
        if not self.eta >= 0:
            raise ConfigError(f"DDIM eta must be >= 0, got {self.eta}")
        if self.query_block < 1:
            raise ConfigError(f"query_block must be at least 1, got {self.query_block}")

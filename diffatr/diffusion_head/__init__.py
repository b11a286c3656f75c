"""Phase 2: the DiffATR diffusion head (Xin et al. 2024) trained and sampled on cached tensors.

schedule.py (betas, q_sample), denoiser.py (the reference denoiser), fused.py (the factorised
inference path), ddim.py (the sampler), batches.py, stacked.py + optim.py (the training fast
path), trainer.py (one step), train.py (epochs, validation, checkpoints), rerank.py (top-k
re-ranking as a `Scores`), checkpoint.py, evaluate.py (evaluation with a trained head).
"""

from .checkpoint import Head, load_head, save_head
from .config import HeadConfig, RerankConfig
from .ddim import ddim_sample, ddim_timesteps
from .denoiser import Denoiser, sinusoidal_table
from .fused import GalleryDenoiser
from .rerank import DiffusionScores
from .schedule import alphas_cumprod, cosine_betas, linear_betas, make_betas, q_sample

__all__ = [
    "Denoiser",
    "DiffusionScores",
    "GalleryDenoiser",
    "Head",
    "HeadConfig",
    "RerankConfig",
    "alphas_cumprod",
    "cosine_betas",
    "ddim_sample",
    "ddim_timesteps",
    "linear_betas",
    "load_head",
    "make_betas",
    "q_sample",
    "save_head",
    "sinusoidal_table",
]

"""Settings of phase 1 (the contrastive projection heads): one frozen dataclass.

`asdict()` of it goes into every projection checkpoint and every cache projected with one, so
any artefact says how it was made. Defaults are method.md's (Mei et al.'s optimiser, tau fixed).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ContrastiveConfig:
    joint_dim: int = 512  # J, the joint space (the paper's "feature channels"); hidden = 2J
    tau: float = 0.07  # NT-Xent temperature, fixed (not learned)
    exclude_siblings: bool = True  # drop other captions of a batch's clips from the negatives
    # Mei et al.'s settings.yaml trains 50 epochs: with StepLR every 20 the rate drops twice
    # (1e-4, 1e-5, 1e-6), and fewer than 21 epochs would never reach the lower rates; the best
    # validation epoch is kept, so the extra epochs cost time, not quality.
    epochs: int = 50
    batch_size: int = 32  # caption rows per batch (paper: 32 AudioCaps, 24 Clotho)
    lr: float = 1e-4  # Adam learning rate
    lr_step: int = 20  # StepLR: multiply the rate by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1
    grad_clip: float = 2.0  # max global gradient norm
    seed: int = 0  # initialisation and batch order: same seed, same checkpoint
    device: str = "auto"  # "auto" = CUDA when present, else CPU

    @property
    def hidden_dim(self) -> int:
        """Width of both heads' hidden layer, 2J (Mei et al.'s `joint_embed * 2`)."""
        return 2 * self.joint_dim

    def check(self) -> None:
        if self.joint_dim < 1 or self.epochs < 1 or self.batch_size < 2 or self.lr_step < 1:
            raise ValueError("joint_dim, epochs and lr_step must be >= 1, the batch size >= 2")
        if self.tau <= 0:
            raise ValueError(f"the temperature tau must be positive, got {self.tau}")

"""Settings of an ablation run: the datasets, the seeds and the base settings the grids vary.

`asdict(AblationConfig)` goes into every result file, so a table can be traced to its settings.
"""

from dataclasses import dataclass

from ..coattention.config import CoAttentionConfig
from ..contrastive.config import ContrastiveConfig
from ..diffusion_head.config import HeadConfig, RerankConfig
from ..errors import UserError
from ..evaluate.baselines.config import BASELINES, BaselineConfig


@dataclass(frozen=True)
class Dataset:
    """One dataset's three caches (backbone features: phase 1 runs first; joint: it does not)."""

    name: str  # the name tables use, e.g. "clotho"
    train: str  # the training split (also the query bank of QB-Norm)
    val: str  # validation: checkpoint selection of both phases
    test: str  # the split the tables report

    @classmethod
    def parse(cls, text: str) -> "Dataset":
        """`NAME=TRAIN,VAL,TEST`, the command line's form."""
        name, sep, paths = text.partition("=")
        parts = paths.split(",")
        if not sep or not name or len(parts) != 3 or not all(parts):
            raise UserError(
                f"--data {text!r}: expected NAME=TRAIN.h5,VAL.h5,TEST.h5 "
                "(e.g. clotho=caches/clotho_train.h5,caches/clotho_val.h5,caches/clotho_test.h5)"
            )
        return cls(name, *parts)


@dataclass(frozen=True)
class AblationConfig:
    seeds: tuple[int, ...] = (0, 1, 2)  # mean +- std over these (each seeds phase 1, 2, x_K)
    head: HeadConfig = HeadConfig()  # the base phase-2 settings (the paper's: K=50, B=32, ...)
    rerank: RerankConfig = RerankConfig()  # the base inference settings (top-32, alpha 1, T 1)
    contrastive: ContrastiveConfig = ContrastiveConfig()  # phase 1, for backbone caches only
    baselines: tuple[str, ...] = BASELINES  # re-rankers with no training, beside every table
    baseline: BaselineConfig = BaselineConfig()  # their temperatures (the top-k is rerank's)
    coattention: CoAttentionConfig | None = None  # also the co-attention head's row (its
    #   frames and tokens must be in the caches; `diffatr project` carries them through)
    protocol: str = "paper"  # "paper" (both directions), "dcase" (t2a + jackknife CI) or
    #   "dcase2025" (t2a mAP@16; each caption's own clip is its one relevant clip)
    figure_query: str | int = "first-improved"  # Figure 3's query: the first the head moves
    #   to rank 1 (a chosen success, said on the figure), "first", or a caption row
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    stack_heads: bool | None = None  # train a row's seeds' heads as one stacked computation
    #   (each as trained alone; False: one after another); None: where measured faster (CUDA)
    report: bool = False  # also a per-query HTML page of every re-ranked row vs cosine

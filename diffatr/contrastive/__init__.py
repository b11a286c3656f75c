"""Phase 1: contrastive projection heads trained on cached backbone features (method.md).

config.py (ContrastiveConfig), heads.py (the two MLP heads), loss.py (symmetric NT-Xent with
sibling masking), train.py (epochs, validation, checkpoints), checkpoint.py (the `.pt` file),
project.py (a backbone cache -> a joint-space cache).
"""

from .checkpoint import Projection, load_projection, save_projection
from .config import ContrastiveConfig
from .heads import ProjectionHeads
from .loss import nt_xent, sibling_mask
from .project import ProjectResult, project_cache
from .train import train_contrastive

__all__ = [
    "ContrastiveConfig",
    "ProjectResult",
    "Projection",
    "ProjectionHeads",
    "load_projection",
    "nt_xent",
    "project_cache",
    "save_projection",
    "sibling_mask",
    "train_contrastive",
]

"""Several extraction processes started by `torchrun`: who am I, which share of the work is
mine, and the two meeting points (rank 0 hands out the plan; everyone waits before the merge).

Reads: the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Writes
nothing. The process group uses the gloo backend even on GPU nodes: the ranks exchange only a
small plan and a barrier, never tensors, and gloo needs no GPU. A single process (WORLD_SIZE
unset or 1) starts no process group at all.
"""

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import UserError

T = TypeVar("T")
# The last rank to finish may be this much behind the first; torchrun stops every rank at once
# when one fails, so a long wait only ever means a slow peer, not a dead one.
BARRIER_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the extraction processes."""

    rank: int = 0  # 0 .. world - 1; rank 0 prepares the work folder and merges
    world: int = 1  # number of processes
    local_rank: int = 0  # index on this machine: picks cuda:<local_rank>

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def ranks_from_env() -> Ranks:
    """The ranks torchrun set in the environment (a single process when they are absent)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise UserError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({e})") from None
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Ranks(rank, world, local)


@contextlib.contextmanager
def process_group(ranks: Ranks) -> Iterator[None]:
    """Join the other ranks (gloo) for the duration of the block; nothing for one process."""
    if ranks.world == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group(
        "gloo", rank=ranks.rank, world_size=ranks.world, timeout=BARRIER_TIMEOUT
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def from_main(obj: T, ranks: Ranks) -> T:
    """Rank 0's `obj` on every rank (pickled; keep it small)."""
    if ranks.world == 1:
        return obj
    box = [obj if ranks.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ranks: Ranks) -> None:
    """Wait until every rank gets here."""
    if ranks.world > 1:
        dist.barrier()


def contiguous_share(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This rank's contiguous slice of `items`: sizes differ by at most one, none repeated
    (unlike DistributedSampler, which pads with duplicates)."""
    n, world = len(items), ranks.world
    lo = ranks.rank * n // world
    hi = (ranks.rank + 1) * n // world
    return list(items[lo:hi])


def rank_device(choice: str, ranks: Ranks) -> str:
    """The device for this rank: "auto"/"cuda" become cuda:<local_rank> when CUDA is there."""
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
    return choice

"""The ablation grids: one per table of the paper, plus the settings the paper leaves out.

Reads nothing, writes nothing. A table is a list of rows; a row names a *system* (how the test
split is ranked) and the settings it changes from the base configuration: `head` overrides
`HeadConfig` (a differently trained head), `rerank` overrides `RerankConfig` (the same head,
sampled differently). Systems:

    cosine        phase-1 cosine ranking (the paper's "Dis")
    diffatr       the head's fusion S + alpha * softmax(x0_hat / T) (the paper's "Gen+Dis")
    diffatr-gen   the top-k ordered by the head alone (the paper's "Gen")
    coattention   the co-attention head (Sun et al. 2024) re-ranking the same top-k
    <baseline>    an inference-time re-ranker with no training (`diffatr.evaluate.baselines`)

Every table also gets the baselines' rows (and, when asked for, the co-attention head's), so a
reader sees whether the learned head beats a free trick, or the other paper's head, on the same
top-k. "ood" trains on one dataset and tests on another.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config names the grids' rows; only the annotations need it here
    from .config import AblationConfig, Dataset

HEAD_SYSTEMS = ("diffatr", "diffatr-gen")


@dataclass(frozen=True)
class Row:
    label: str  # the row's name in the table
    system: str = "diffatr"  # see the module docstring
    head: dict = field(default_factory=dict)  # HeadConfig overrides (trains another head)
    rerank: dict = field(default_factory=dict)  # RerankConfig overrides (evaluation only)


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[Row, ...]
    paper: str = ""  # the paper's table this regenerates, if any


TABLES: dict[str, Table] = {
    "strategy": Table(
        "Effect of the training strategy",
        (Row("Dis", "cosine"), Row("Gen", "diffatr-gen"), Row("Gen+Dis", "diffatr")),
        "Table 5",
    ),
    "steps": Table(
        "Effect of the diffusion steps K (trained and sampled with K)",
        tuple(Row(f"K={K}", head={"K": K}) for K in (10, 50, 100, 200)),
        "Table 6",
    ),
    "batch": Table(
        "Effect of the training batch size",
        tuple(Row(f"B={b}", head={"batch_size": b}) for b in (16, 24, 32)),
        "Table 7",
    ),
    "ood": Table(
        "Out-of-domain retrieval (train on the source, test on the target)",
        (Row("Dis", "cosine"), Row("Diff", "diffatr")),
        "Tables 3 and 4",
    ),
    "topk": Table(
        "Effect of the re-ranked top-k",
        (
            *(Row(f"top-{k}", rerank={"topk": k}) for k in (8, 16, 32, 64)),
            Row("top-all", rerank={"topk": None}),
        ),
    ),
    "alpha": Table(
        "Effect of the fusion weight alpha",
        tuple(Row(f"alpha={a:g}", rerank={"alpha": a}) for a in (0.25, 0.5, 1.0, 2.0, 4.0)),
    ),
    "sampling-steps": Table(
        "Effect of sampling with fewer DDIM steps than K",
        tuple(Row(f"S={s}", rerank={"steps": s}) for s in (1, 2, 5, 10, 25, 50)),
    ),
    "eta": Table(
        "Effect of DDIM eta (0: deterministic given x_K)",
        tuple(Row(f"eta={e:g}", rerank={"eta": e}) for e in (0.0, 0.5, 1.0)),
    ),
}

TABLE_NAMES = tuple(TABLES)


def table_pairs(name: str, datasets: list["Dataset"]) -> list[tuple["Dataset", "Dataset"]]:
    """The (source, target) `Dataset` pairs of a table: every ordered pair for ood, else (d, d)."""
    if name == "ood":
        return [(s, t) for s in datasets for t in datasets if s != t]
    return [(d, d) for d in datasets]


def row_fits(row: Row, cfg: "AblationConfig") -> bool:
    """False for a row that would sample with more DDIM steps than its head was trained with."""
    steps = row.rerank.get("steps")
    return steps is None or steps <= row.head.get("K", cfg.head.K)

"""Settings of the inference-time re-ranking baselines: one frozen dataclass for all three.

`asdict()` of it goes into every result file, so a number says which baseline made it and how.
The defaults are each method's own (the sources are cited at each field).
"""

from dataclasses import dataclass

BASELINES = ("dual-softmax", "inverted-softmax", "qb-norm")


@dataclass(frozen=True)
class BaselineConfig:
    name: str = "dual-softmax"  # one of BASELINES
    topk: int | None = 32  # candidates re-ranked per query (the head's default); None = all
    # Dual softmax: T of the prior softmax over queries, on cosine similarities. Cheng et al.'s
    # DSL.py (starmemda/CAMoE) divides CLIP4Clip logits (100 * cosine) by temp=1000 in the loss;
    # the CLIP4Clip-based code that applies DSL at evaluation (`--DSL` flags) uses
    # softmax(logits / 1, dim=0) on the same logits, i.e. softmax(cosine / 0.01).
    temperature: float = 0.01
    # Inverted softmax and QB-Norm: inverse temperature beta of exp(beta * S). QB-Norm's
    # dynamic_inverted_softmax.py (ioanacroi/qb-norm) defaults to 20 and its README reports 20
    # for every benchmark but two; Smith et al. fit beta on training pairs instead.
    beta: float = 20.0
    # QB-Norm: gallery items in the top-`activation_topk` of some bank query form the activation
    # set (get_retrieved_videos(train_test, k) with k = 1 in the official code).
    activation_topk: int = 1
    query_block: int = 64  # queries re-scored together (memory only: results do not depend on it)

    def check(self) -> None:
        if self.name not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, not {self.name!r}")
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"top-k must be at least 1 (or all), got {self.topk}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta}")
        if self.activation_topk < 1 or self.query_block < 1:
            raise ValueError("activation_topk and query_block must be at least 1")

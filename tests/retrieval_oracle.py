"""A naive, obviously-correct implementation of the paper protocol (method.md, "Evaluation
protocols"): Python lists, loops and `sorted(key=(-score, index))`, correct by inspection.
It is the oracle for the fast, chunked implementation in `diffatr.evaluate`."""

import math


def as_rows(S) -> list[list[float]]:
    """Any (Nt, Na) matrix (nested lists, numpy, torch) as a list of lists of Python floats."""
    if hasattr(S, "tolist"):
        S = S.tolist()
    return [[float(v) for v in row] for row in S]


def oracle_order(scores: list[float]) -> list[int]:
    """Gallery indices best first; equal scores keep gallery order (lower index first)."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def oracle_column(S: list[list[float]], a: int) -> list[float]:
    return [S[j][a] for j in range(len(S))]


def oracle_t2a_ranks(S, audio_index) -> list[int]:
    """1-based rank of each caption's clip in its query; 0 for captions with no clip."""
    S = as_rows(S)
    ranks = []
    for j, a in enumerate(audio_index):
        if a < 0:
            ranks.append(0)
        else:
            ranks.append(oracle_order(S[j]).index(a) + 1)
    return ranks


def oracle_a2t_ranks(S, audio_index, n_audio: int) -> list[int]:
    """1-based rank of each caption in the query of its own clip; 0 for captions with no clip."""
    S = as_rows(S)
    ranks = [0] * len(S)
    for a in range(n_audio):
        order = oracle_order(oracle_column(S, a))
        for position, j in enumerate(order):
            if audio_index[j] == a:
                ranks[j] = position + 1
    return ranks


def oracle_median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    middle = n // 2
    if n % 2 == 1:
        return v[middle]
    return (v[middle - 1] + v[middle]) / 2


def oracle_summary(prefix: str, best: list[int], ap: list[float]) -> dict[str, float]:
    n = len(best)
    out = {}
    for k in (1, 5, 10):
        hits = 0
        for r in best:
            if r <= k:
                hits += 1
        out[f"{prefix}R@{k}"] = 100.0 * hits / n
    out[f"{prefix}mAP@10"] = 100.0 * sum(ap) / n
    out[f"{prefix}medR"] = float(math.floor(oracle_median([r - 1 for r in best])) + 1)
    out[f"{prefix}meanR"] = sum(best) / n
    return out


def oracle_paper(S, audio_index) -> dict[str, float]:
    S = as_rows(S)
    audio_index = [int(a) for a in audio_index]
    n_audio = len(S[0])
    # text -> audio: every labelled caption is a query over all clips.
    t2a_best, t2a_ap = [], []
    for j, a in enumerate(audio_index):
        if a < 0:
            continue
        r = oracle_order(S[j]).index(a) + 1
        t2a_best.append(r)
        t2a_ap.append(1.0 / r if r <= 10 else 0.0)
    # audio -> text: every clip with a caption is a query over ALL captions.
    a2t_best, a2t_ap = [], []
    for a in range(n_audio):
        own = [j for j in range(len(S)) if audio_index[j] == a]
        if not own:
            continue
        order = oracle_order(oracle_column(S, a))
        ranks = sorted(order.index(j) + 1 for j in own)
        total = 0.0
        for i, r in enumerate(ranks, start=1):
            if r <= 10:
                total += i / r
        a2t_best.append(ranks[0])
        a2t_ap.append(total / len(own))
    return {**oracle_summary("t2a_", t2a_best, t2a_ap), **oracle_summary("a2t_", a2t_best, a2t_ap)}

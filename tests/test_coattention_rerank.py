"""Top-k re-ranking with the co-attention head against a dense oracle: cosine in float64,
torch.topk per query, the naive pair-by-pair head (`coattention_oracle`), then method.md's
combinations ("gen": the top-k ordered by the head alone, above every cosine; "fusion":
S + alpha * softmax(s / tau)); and the bounded, chunked reading of the cache."""

import copy

import coattention_oracle as oracle
import pytest
import torch
import torch.nn.functional as F

from diffatr.cache import Cache, SequenceSyntheticConfig, load_tensors, make_synthetic_sequences
from diffatr.coattention import CoAttentionConfig, CoAttentionHead, CoAttentionScores, packed
from diffatr.coattention.config import CoRerankConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TAU = 0.07


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    path = tmp_path_factory.mktemp("rerank") / "val.h5"
    make_synthetic_sequences(path, SequenceSyntheticConfig(n_bags=6, frame_dim=6, token_dim=5))
    with Cache(path) as cache:
        frames = [torch.from_numpy(cache.sequence("audio", i)) for i in range(cache.n_audio)]
        tokens = [torch.from_numpy(cache.sequence("text", j)) for j in range(cache.n_text)]
    torch.manual_seed(0)
    cfg = CoAttentionConfig(d_model=8, heads=2, ffn=12, dropout=0.0, variant="iterating")
    head = CoAttentionHead(6, 5, cfg).eval()
    P = oracle.score_matrix(copy.deepcopy(head).double(), tokens, frames)  # (Nt, Na)
    return path, load_tensors(path), head, P


def expected(S: torch.Tensor, P: torch.Tensor, k: int | None, mode: str, alpha: float = 1.0):
    """S' (queries, candidates) from dense S and head scores P of the same orientation."""
    out = S.clone()
    for i in range(len(S)):
        top = torch.arange(S.shape[1]) if k is None else S[i].topk(k).indices
        s = P[i, top]
        if mode == "gen":
            out[i, top] = 2 + s - torch.clamp(s.min(), max=0.0)
        else:
            out[i, top] = S[i, top] + alpha * torch.softmax(s / TAU, 0)
    return out


def scores(split, **kw) -> CoAttentionScores:
    path, data, head, _ = split
    with Cache(path) as cache:
        return CoAttentionScores(data.text, data.audio, head, TAU, cache, CoRerankConfig(**kw))


@pytest.mark.parametrize("k,mode", [(4, "gen"), (5, "fusion"), (None, "gen")])
def test_reranked_rows_match_the_dense_oracle(split, k, mode) -> None:
    _, data, _, P = split
    S = F.normalize(data.text.double(), dim=1) @ F.normalize(data.audio.double(), dim=1).T
    got = scores(split, topk=k, mode=mode, alpha=0.5)
    torch.testing.assert_close(
        got.t2a(0, got.n_text).double(), expected(S, P, k, mode, 0.5), rtol=0, atol=2e-5
    )
    torch.testing.assert_close(
        got.a2t(0, got.n_audio).double(), expected(S.T, P.T, k, mode, 0.5), rtol=0, atol=2e-5
    )


def test_blocks_and_chunks_do_not_change_the_scores(split) -> None:
    base = scores(split, topk=6)
    small = scores(split, topk=6, query_block=5, pair_block=7, chunk_items=3)
    for direction, n in (("t2a", base.n_text), ("a2t", base.n_audio)):
        whole = getattr(base, direction)(0, n)
        parts = torch.cat([getattr(small, direction)(s, min(n, s + 4)) for s in range(0, n, 4)])
        torch.testing.assert_close(parts, whole, rtol=0, atol=1e-6)


def test_the_cache_is_read_chunk_by_chunk_once(split, monkeypatch) -> None:
    reads = []
    original = Cache.sequences

    def spy(self, side, start, stop):
        reads.append((side, stop - start))
        return original(self, side, start, stop)

    monkeypatch.setattr(Cache, "sequences", spy)
    s = scores(split, topk=4, chunk_items=5)
    s.t2a(0, s.n_text), s.a2t(0, s.n_audio)
    assert max(n for _, n in reads) <= 5
    assert sum(n for side, n in reads if side == "audio") == s.n_audio
    assert sum(n for side, n in reads if side == "text") == s.n_text


@pytest.mark.parametrize("k", [4, None])
def test_a2t_scores_only_the_pairs_t2a_did_not(split, k, monkeypatch) -> None:
    computed = []
    original = packed.pair_scores

    def spy(head, text, audio, text_rows, audio_rows):
        computed.append(set(zip(text_rows.tolist(), audio_rows.tolist(), strict=True)))
        return original(head, text, audio, text_rows, audio_rows)

    fresh = scores(split, topk=k)
    fresh = fresh.a2t(0, fresh.n_audio)  # a2t alone: every pair computed
    monkeypatch.setattr(packed, "pair_scores", spy)
    s = scores(split, topk=k)
    s.t2a(0, s.n_text)
    t2a_pairs = set().union(*computed)
    computed.clear()
    got = s.a2t(0, s.n_audio)
    _, data, _, _ = split
    S = F.normalize(data.text, dim=1) @ F.normalize(data.audio, dim=1).T  # (Nt, Na)
    a2t_pairs = {(int(t), a) for a in range(s.n_audio) for t in S[:, a].topk(k or s.n_text).indices}
    assert set().union(*computed) == a2t_pairs - t2a_pairs
    assert k is not None or not computed  # every pair is t2a's when all are re-ranked
    torch.testing.assert_close(got, fresh, rtol=0, atol=1e-6)

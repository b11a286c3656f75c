"""The co-attention head against its naive oracle: attention, units, variants, masking, loss."""

import coattention_oracle as oracle
import pytest
import torch

from diffatr.coattention import CoAttentionConfig, CoAttentionHead, nt_xent
from diffatr.coattention.attention import MultiHeadAttention

pytestmark = pytest.mark.usefixtures("one_thread")

DF, DL = 6, 5


def config(**kw) -> CoAttentionConfig:
    return CoAttentionConfig(**{"d_model": 8, "heads": 2, "ffn": 12, "dropout": 0.0, **kw})


def head(seed: int = 0, **kw) -> CoAttentionHead:
    torch.manual_seed(seed)
    return CoAttentionHead(DF, DL, config(**kw)).double().eval()


def ragged(seed: int, lengths: list[int], dim: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=g, dtype=torch.float64) for n in lengths]


def padded(seqs: list[torch.Tensor], extra: int = 0, garbage: float = 0.0, seed: int = 9):
    """Pad to the longest + `extra` positions, filled with `garbage` * N(0, 1)."""
    n = max(len(s) for s in seqs) + extra
    g = torch.Generator().manual_seed(seed)
    x = garbage * torch.randn(len(seqs), n, seqs[0].shape[1], generator=g, dtype=torch.float64)
    mask = torch.zeros(len(seqs), n, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)], mask[i, : len(s)] = s, True
    return x, mask


def scores(model: CoAttentionHead, tokens, frames, extra: int = 0, garbage: float = 0.0):
    with torch.no_grad():
        text = model.encode_text(*padded(tokens, extra, garbage, seed=1))
        audio = model.encode_audio(*padded(frames, extra, garbage, seed=2))
        return model.all_pairs(text, audio)


TOKENS = ragged(0, [3, 5, 1, 4], DL)
FRAMES = ragged(1, [7, 2, 4], DF)


def test_multi_head_attention_matches_a_per_head_loop() -> None:
    torch.manual_seed(0)
    att = MultiHeadAttention(8, 4).double()
    x, y = ragged(2, [5], 8)[0], ragged(3, [6], 8)[0]
    key_mask = torch.tensor([[True] * 4 + [False] * 2])
    got = att(x[None], y[None], key_mask)[0]
    torch.testing.assert_close(got, oracle.mha(att, x, y[:4]), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="multiple of heads"):
        MultiHeadAttention(10, 4)


@pytest.mark.parametrize(
    "variant,layers", [("single", 1), ("stacking", 1), ("stacking", 3), ("iterating", 3)]
)
def test_pair_scores_match_the_pair_by_pair_oracle(variant: str, layers: int) -> None:
    model = head(variant=variant, layers=layers)
    expected = oracle.score_matrix(model, TOKENS, FRAMES)
    torch.testing.assert_close(scores(model, TOKENS, FRAMES), expected, rtol=0, atol=1e-10)
    some = model.pair_scores(
        model.encode_text(*padded(TOKENS)),
        model.encode_audio(*padded(FRAMES)),
        torch.tensor([3, 0, 0]),
        torch.tensor([1, 2, 1]),
    )
    torch.testing.assert_close(some, expected[[3, 0, 0], [1, 2, 1]], rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", ["single", "stacking", "iterating"])
def test_padding_never_changes_a_score(variant: str) -> None:
    model = head(variant=variant, layers=2)
    clean = scores(model, TOKENS, FRAMES)
    dirty = scores(model, TOKENS, FRAMES, extra=6, garbage=1e3)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=1e-12)
    # and one item's padding does not depend on who else is in the batch
    alone = scores(model, TOKENS[1:2], FRAMES[2:3])
    torch.testing.assert_close(alone[0, 0], clean[1, 2], rtol=0, atol=1e-12)


def test_stacking_with_one_layer_equals_the_single_module() -> None:
    single = head(seed=0, variant="single")
    stacked = head(seed=5, variant="stacking", layers=1)
    assert not torch.allclose(scores(single, TOKENS, FRAMES), scores(stacked, TOKENS, FRAMES))
    stacked.load_state_dict(single.state_dict())
    assert stacked.depth == 1 and len(stacked.blocks) == 1
    torch.testing.assert_close(
        scores(stacked, TOKENS, FRAMES), scores(single, TOKENS, FRAMES), rtol=0, atol=0
    )


def test_iterating_shares_one_module_and_stacking_does_not() -> None:
    counts = {}
    for layers in (1, 2, 4):
        it = head(variant="iterating", layers=layers)
        counts[layers] = sum(p.numel() for p in it.parameters())
        assert it.depth == layers and len(it.blocks) == 1
        assert all(it.module_at(i) is it.blocks[0] for i in range(layers))
        st = head(variant="stacking", layers=layers)
        assert len({id(st.module_at(i)) for i in range(layers)}) == layers
    assert counts[1] == counts[2] == counts[4]
    # depth matters for iterating: applying the shared module again changes the scores
    two, one = head(variant="iterating", layers=2), head(variant="single")
    one.load_state_dict(two.state_dict())
    assert not torch.allclose(scores(two, TOKENS, FRAMES), scores(one, TOKENS, FRAMES))


def test_nt_xent_matches_the_naive_sums_and_leaves_siblings_out() -> None:
    g = torch.Generator().manual_seed(0)
    S = torch.rand(5, 5, generator=g, dtype=torch.float64) * 2 - 1
    clips = [0, 1, 0, 2, 1]
    clip = torch.tensor(clips)
    siblings = (clip[:, None] == clip[None, :]) & ~torch.eye(5, dtype=torch.bool)
    got = nt_xent(S, 0.07, siblings).item()
    assert got == pytest.approx(oracle.nt_xent(S, 0.07, clips), abs=1e-12)
    distinct = nt_xent(S, 0.07).item()
    assert distinct == pytest.approx(oracle.nt_xent(S, 0.07, list(range(5))), abs=1e-12)
    assert got < distinct  # a sibling's high score no longer counts against its caption

"""The re-ranking's packed pair scores (real positions only) against the pair-by-pair oracle and
the padded `CoAttentionHead.pair_scores`, and a pair's score independent of its block."""

import coattention_oracle as oracle
import pytest
import torch
from test_coattention_model import FRAMES, TOKENS, head, padded

from diffatr.coattention import CoAttentionConfig, CoAttentionHead, packed
from diffatr.coattention.packed import RaggedStates

pytestmark = pytest.mark.usefixtures("one_thread")


def encoded(model: CoAttentionHead, side: str, seqs: list):
    x, mask = padded(seqs)
    encode = model.encode_text if side == "text" else model.encode_audio
    return encode(x.to(model.frames_in.weight.dtype), mask)


def states(model: CoAttentionHead, tokens, frames, chunk: int = 2):
    """Ragged states of both sides, encoded `chunk` items at a time (as encode_side does)."""
    with torch.no_grad():
        return tuple(
            RaggedStates.cat(
                [RaggedStates.of(encoded(model, side, seqs[i : i + chunk]))
                 for i in range(0, len(seqs), chunk)]
            )
            for side, seqs in (("text", tokens), ("audio", frames))
        )  # fmt: skip


@pytest.mark.parametrize("variant,layers", [("single", 1), ("stacking", 3), ("iterating", 3)])
def test_packed_pair_scores_match_the_pair_by_pair_oracle(variant: str, layers: int) -> None:
    model = head(variant=variant, layers=layers)
    expected = oracle.score_matrix(model, TOKENS, FRAMES)  # (4, 3)
    text, audio = states(model, TOKENS, FRAMES)
    ti, ai = torch.tensor([3, 0, 0, 2, 1, 1, 3]), torch.tensor([1, 2, 1, 0, 0, 2, 2])
    with torch.no_grad():
        got = packed.pair_scores(model, text, audio, ti, ai)
    torch.testing.assert_close(got, expected[ti, ai], rtol=0, atol=1e-10)


def test_ragged_states_keep_each_items_real_positions_in_order() -> None:
    model = head()
    text, audio = states(model, TOKENS, FRAMES, chunk=3)
    assert text.offsets.tolist() == [0, 3, 8, 9, 13] and text.longest == 5
    assert audio.offsets.tolist() == [0, 7, 9, 13] and audio.longest == 7
    with torch.no_grad():
        whole = encoded(model, "text", TOKENS)
    torch.testing.assert_close(text.x[3:8], whole.x[1, :5], rtol=0, atol=0)
    torch.testing.assert_close(text.k[9:13], whole.k[3, :, :4].transpose(0, 1).reshape(4, -1))


def test_a_pairs_score_does_not_depend_on_the_pairs_beside_it() -> None:
    """float32 at realistic lengths (bench_coattention's, d_h = 32): 96 pairs at once, in blocks
    of 24 grouped by caption length, and reversed give the same bits (keys padded to the side's
    longest item, not the block's: with the block's this fails), and agree with the padded path
    to float32 rounding."""
    g = torch.Generator().manual_seed(3)
    tokens = [
        torch.randn(int(n), 12, generator=g) for n in torch.randint(12, 29, (20,), generator=g)
    ]
    frames = [
        torch.randn(int(n), 16, generator=g) for n in torch.randint(25, 36, (8,), generator=g)
    ]
    torch.manual_seed(0)
    model = CoAttentionHead(16, 12, CoAttentionConfig(d_model=128, heads=4, ffn=64)).eval()
    text, audio = states(model, tokens, frames, chunk=8)
    ti = torch.randint(0, 20, (96,), generator=g)
    ai = torch.randint(0, 8, (96,), generator=g)
    with torch.no_grad():
        whole = packed.pair_scores(model, text, audio, ti, ai)
        # blocks of 24 pairs, shortest captions first: each block's longest differs
        order = torch.tensor([len(tokens[i]) for i in ti]).argsort(stable=True)
        blocks = torch.empty(96)
        for p in range(0, 96, 24):
            rows = order[p : p + 24]
            blocks[rows] = packed.pair_scores(model, text, audio, ti[rows], ai[rows])
        backwards = packed.pair_scores(model, text, audio, ti.flip(0), ai.flip(0)).flip(0)
        padded_path = model.pair_scores(
            encoded(model, "text", tokens), encoded(model, "audio", frames), ti, ai
        )
    assert torch.equal(blocks, whole) and torch.equal(backwards, whole)
    torch.testing.assert_close(whole, padded_path, rtol=0, atol=1e-6)

"""Phase 1's pieces: the projection heads, NT-Xent against a plain-loop oracle and against Mei
et al.'s loss, and the synthetic backbone-feature split (diffatr/contrastive/, cache/)."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffatr.cache import BackboneSyntheticConfig, Cache, make_synthetic_backbone, verify
from diffatr.contrastive import ProjectionHeads, nt_xent, sibling_mask

pytestmark = pytest.mark.usefixtures("one_thread")

TAU = 0.07


# -- the heads ---------------------------------------------------------------------------------
def test_heads_shapes_and_parameter_names() -> None:
    heads = ProjectionHeads(audio_dim=40, text_dim=24, joint_dim=8)
    shapes = {name: tuple(p.shape) for name, p in heads.named_parameters()}
    assert shapes == {
        "audio.0.weight": (16, 40), "audio.0.bias": (16,),
        "audio.2.weight": (8, 16), "audio.2.bias": (8,),
        "text.0.weight": (16, 24), "text.0.bias": (16,),
        "text.2.weight": (8, 16), "text.2.bias": (8,),
    }  # fmt: skip
    t, a = heads(torch.randn(5, 24), torch.randn(3, 40))
    assert t.shape == (5, 8) and a.shape == (3, 8)
    x = torch.randn(3, 40)
    want = torch.relu(x @ heads.audio[0].weight.T + heads.audio[0].bias)
    want = want @ heads.audio[2].weight.T + heads.audio[2].bias
    torch.testing.assert_close(heads.audio(x), want)


def test_default_heads_are_method_md_sizes() -> None:
    for dt in (768, 384):
        heads = ProjectionHeads(2048, dt)
        assert heads.audio[0].weight.shape == (1024, 2048)
        assert heads.text[0].weight.shape == (1024, dt)
        assert heads.audio[2].weight.shape == heads.text[2].weight.shape == (512, 1024)


# -- the loss ----------------------------------------------------------------------------------
def oracle_nt_xent(text, audio, tau, clip_ids=None) -> float:
    """L_D by the definition, in Python floats: S_ij = cos(t_i, a_j) / tau; row i's (and
    column i's) denominator runs over j = i and every j of another clip (all j without ids)."""
    t, a = text.double().tolist(), audio.double().tolist()
    B = len(t)

    def cos(u, v):
        dot = sum(x * y for x, y in zip(u, v, strict=True))
        return dot / math.sqrt(sum(x * x for x in u)) / math.sqrt(sum(y * y for y in v))

    S = [[cos(t[i], a[j]) / tau for j in range(B)] for i in range(B)]

    def kept(i):
        return [j for j in range(B) if clip_ids is None or j == i or clip_ids[j] != clip_ids[i]]

    t2a = sum(math.log(sum(math.exp(S[i][j]) for j in kept(i))) - S[i][i] for i in range(B))
    a2t = sum(math.log(sum(math.exp(S[j][i]) for j in kept(i))) - S[i][i] for i in range(B))
    return 0.5 * t2a / B + 0.5 * a2t / B


def mei_nt_xent(audio_embeds, text_embeds, labels, tau=TAU):
    """Mei et al.'s NTXent.forward (tools/loss.py of XinhaoMei/audio-text_retrieval), line by
    line; its sibling mask is applied after the log-softmax, so it never reaches the
    denominators."""
    n = audio_embeds.shape[0]

    def cos_sim(a, b):  # sentence_transformers.util.cos_sim
        return F.normalize(a, p=2, dim=1) @ F.normalize(b, p=2, dim=1).T

    a2t = cos_sim(audio_embeds, text_embeds) / tau
    t2a = cos_sim(text_embeds, audio_embeds) / tau
    mask = labels.expand(n, n).eq(labels.expand(n, n).t())
    mask_diag = torch.diag_embed(mask.diag())
    mask = mask ^ mask_diag
    a2t_loss = -torch.log_softmax(a2t, dim=1).masked_fill(mask, 0).diag().mean()
    t2a_loss = -torch.log_softmax(t2a, dim=1).masked_fill(mask, 0).diag().mean()
    return 0.5 * a2t_loss + 0.5 * t2a_loss


@pytest.fixture
def batch():
    """8 caption rows of 5 clips: clip 1 fills three rows, clip 3 two (siblings)."""
    g = torch.Generator().manual_seed(0)
    clips = torch.tensor([0, 1, 2, 1, 3, 1, 4, 3])
    latent = torch.randn(5, 6, generator=g, dtype=torch.float64)
    audio = latent[clips]  # a clip's rows hold the same audio, as in training
    text = latent[clips] + 0.8 * torch.randn(8, 6, generator=g, dtype=torch.float64)
    return text, audio, clips


def test_sibling_mask(batch) -> None:
    _, _, clips = batch
    mask = sibling_mask(clips)
    want = [[i != j and clips[i] == clips[j] for j in range(8)] for i in range(8)]
    assert mask.tolist() == want
    assert mask.sum() == 3 * 2 + 2 * 1  # clip 1: 3 rows, 6 ordered pairs; clip 3: 2


def test_nt_xent_matches_the_oracle_with_siblings_masked_and_kept(batch) -> None:
    text, audio, clips = batch
    masked = nt_xent(text, audio, TAU, clips)
    kept = nt_xent(text, audio, TAU)
    assert masked.item() == pytest.approx(oracle_nt_xent(text, audio, TAU, clips.tolist()), 1e-12)
    assert kept.item() == pytest.approx(oracle_nt_xent(text, audio, TAU), rel=1e-12)
    # masking removes positive terms from the denominators: the loss can only go down
    assert masked < kept - 0.01


def test_unmasked_nt_xent_is_mei_et_al_s(batch) -> None:
    text, audio, clips = batch
    assert nt_xent(text, audio, TAU).item() == pytest.approx(
        mei_nt_xent(audio, text, clips).item(), rel=1e-12
    )
    assert nt_xent(text, audio, TAU, clips) < mei_nt_xent(audio, text, clips) - 0.01


def test_without_siblings_masking_changes_nothing(batch) -> None:
    text, audio, _ = batch
    distinct = torch.arange(8)
    assert nt_xent(text, audio, TAU, distinct).item() == nt_xent(text, audio, TAU).item()


def test_masked_gradients_are_finite_and_follow_the_oracle(batch) -> None:
    text, audio, clips = batch
    text, audio = text.clone().requires_grad_(), audio.clone().requires_grad_()
    nt_xent(text, audio, TAU, clips).backward()
    assert torch.isfinite(text.grad).all() and torch.isfinite(audio.grad).all()
    eps = 1e-6  # central differences of the oracle on two coordinates
    for row, col in ((1, 2), (4, 0)):
        bumped = []
        for sign in (1, -1):
            t = text.detach().clone()
            t[row, col] += sign * eps
            bumped.append(oracle_nt_xent(t, audio.detach(), TAU, clips.tolist()))
        assert text.grad[row, col].item() == pytest.approx(
            (bumped[0] - bumped[1]) / (2 * eps), 1e-5
        )


# -- the synthetic backbone split --------------------------------------------------------------
SMALL = BackboneSyntheticConfig(n_clips=40, captions_per_clip=(1, 3, 5), audio_dim=64, text_dim=48)


def read_all(path):
    with Cache(path) as c:
        out = [c.embeddings("audio")[:], c.embeddings("text")[:], c.audio_index(), c.captions()]
        out.append(c.audio_ids())
        if c.has_sequences("audio"):
            out += [c.sequence("audio", i) for i in range(c.n_audio)]
            out += [c.sequence("text", j) for j in range(c.n_text)]
        return out, c.attrs, c.side_attrs("audio")


def test_synthetic_backbone_is_deterministic_and_verified(tmp_path) -> None:
    cfg = replace(SMALL, sequences=True)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        make_synthetic_backbone(tmp_path / f"{name}.h5", replace(cfg, seed=seed), split="val")
    (a, attrs, audio_attrs), (b, _, _), (c, _, _) = (read_all(tmp_path / f"{n}.h5") for n in "abc")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(a[0][:5], c[0][:5])
    assert attrs["embedding_space"] == "backbone" and attrs["split"] == "val"
    assert audio_attrs["encoder"] == "synthetic-cnn14" and audio_attrs["settings"]["seed"] == 5
    report = verify(tmp_path / "a.h5")
    assert report.ok and not report.warnings, (report.errors, report.warnings)


def test_synthetic_backbone_looks_like_backbone_features(tmp_path) -> None:
    make_synthetic_backbone(tmp_path / "s.h5", replace(SMALL, sequences=True))
    (audio, text, index, captions, ids, *seqs), _, _ = read_all(tmp_path / "s.h5")
    assert audio.shape == (40, 64) and text.shape == (len(index), 48)
    assert set(np.bincount(index).tolist()) <= {1, 3, 5} and len(captions) == len(index)
    assert (audio >= 0).all() and 0.1 < (audio == 0).mean() < 0.6  # ReLU'd, mostly active
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    assert (unit @ unit.T).mean() > 0.3  # BERT-like anisotropy: a large common component
    frames, tokens = seqs[:40], seqs[40:]
    assert all(8 <= len(f) <= 16 and f.shape[1] == 64 and (f >= 0).all() for f in frames)
    assert all(6 <= len(t) <= 14 and t.shape[1] == 48 for t in tokens)
    assert len(set(ids)) == 40


def test_splits_of_one_map_seed_share_the_encoders(tmp_path) -> None:
    """The clips differ between seeds, the encoders only between map seeds: noise-free, one
    class, no clip spread, every split's audio is the same vector."""
    still = replace(
        SMALL, n_classes=1, class_spread=0, audio_noise=0, feature_noise=0, captions_per_clip=(1,)
    )
    for name, seed, map_seed in (("a", 1, 0), ("b", 2, 0), ("c", 1, 1)):
        make_synthetic_backbone(
            tmp_path / f"{name}.h5", replace(still, seed=seed, map_seed=map_seed)
        )
    a, b, c = (read_all(tmp_path / f"{n}.h5")[0][0] for n in "abc")
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, c)

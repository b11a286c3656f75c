"""How `diffatr search` embeds a query: the text encoder a cache records, rebuilt.

Reads: a cache's /text attributes (and, for a joint model's cache, that model's checkpoint;
for a projected cache or with --proj, a projection checkpoint). Writes nothing.

Where the encoder comes from (the first that applies):
    joint model     /text encoder = "joint:<kind>", settings {joint_model, joint_kind,
                    text_encoder}: that model's own text side
                    (`diffatr.extract.joint.load_joint_text_encoder`).
    projected       settings {"source": the backbone's attributes, "projection": {checkpoint}}
                    (`diffatr project`): the backbone's encoder and pooling, then the
                    projection's text head (--proj, else the recorded checkpoint).
    plain           /text encoder = a hub name or folder, pooling = settings.pooling or
                    feature_kind (`diffatr extract`, or `cache import --text-encoder`);
                    a backbone cache needs --proj.
`--text-encoder` / `--pooling` replace the recorded name / pooling (for a joint model's cache,
`--text-encoder` is the text model folder handed to the joint model's loader, and
`--joint-model` replaces the recorded joint model).

Trust: a model named only by the cache's attributes (the joint model, the text encoder, the
projection) is loaded only when its digest is the one the cache recorded
(`cache_models.check_recorded_model`); one given on the command line is the user's to vouch for.
Checkpoints load with weights_only=True unless `trust` (--trust-checkpoint). A joint cache's
`text_encoder` setting names only a tokenizer and config (no weights, no code) and is used as is.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from ..cache import Cache
from ..contrastive.checkpoint import load_projection
from ..errors import UserError
from ..extract.text import POOLINGS, TextEncoder, TextEncoderConfig
from .cache_models import check_recorded_model

UNNAMED = ("", "imported", "synthetic", "unknown")


@dataclass
class QueryEncoder:
    """encode(queries) -> (Q, D) float32 in the cache's joint space (not normalised)."""

    describe: str  # for the report: which encoder, pooling, projection
    _encode: object
    projection: object | None = None  # the ProjectionHeads, when the cache's audio needs them

    def encode(self, queries: list[str]) -> torch.Tensor:
        return self._encode(queries)


def _pooling(name: str, settings: dict, feature_kind: str, given: str) -> str:
    pooling = given or settings.get("pooling") or feature_kind
    if pooling not in POOLINGS:
        raise UserError(
            f"the cache records no pooling for {name} (feature_kind={feature_kind!r}); "
            "pass --pooling cls or --pooling mean"
        )
    return pooling


def _hf(name: str, pooling: str, settings: dict, device: str):
    cfg = TextEncoderConfig(
        name=name, pooling=pooling, max_length=int(settings.get("max_length", 512)), device=device
    )
    encoder = TextEncoder(cfg)
    return encoder, lambda queries: torch.from_numpy(encoder.encode(queries)[0])


_TEXT_OPTION = "--text-encoder NAME_OR_FOLDER"


def query_encoder(
    cache: Cache,
    text_encoder: str = "",
    pooling: str = "",
    proj: str = "",
    device: str = "cpu",
    joint_model: str = "",
    trust: bool = False,
) -> QueryEncoder:
    """Rebuild the cache's text side for new queries (module docstring)."""
    attrs = cache.side_attrs("text")
    settings = attrs.get("settings") if isinstance(attrs.get("settings"), dict) else {}
    encoder = str(attrs.get("encoder", ""))
    width = cache.embeddings("text").shape[1]
    if joint_model and not encoder.startswith("joint:"):
        raise UserError(f"--joint-model: {cache.path} was not made by a joint model ({encoder!r})")
    if encoder.startswith("joint:"):
        if proj or pooling:
            raise UserError(f"{cache.path}: a joint model's cache takes no --proj or --pooling")
        from ..extract.joint import load_joint_text_encoder  # the joint-model extraction

        model = joint_model or str(settings.get("joint_model", ""))
        if not model:
            raise UserError(f"{cache.path}: records no joint model; pass it with --joint-model")
        if not joint_model:
            recorded = str(attrs.get("checkpoint_sha256", ""))
            check_recorded_model(model, recorded, cache.path, "joint model", "--joint-model PATH")
        joint = load_joint_text_encoder(
            model,
            text_encoder=text_encoder or settings.get("text_encoder"),
            device=device,
            clean_captions=bool(settings.get("clean_captions", True)),
            trust=trust,
        )
        return QueryEncoder(f"{encoder} ({model})", lambda q: joint.encode(q).float().cpu())
    source = settings.get("source") if isinstance(settings.get("source"), dict) else None
    if source is not None and "projection" in settings:  # made by `diffatr project`
        inner = source.get("settings") if isinstance(source.get("settings"), dict) else {}
        name = text_encoder or str(source.get("encoder", ""))
        recorded_name = "" if text_encoder else str(source.get("checkpoint_sha256", ""))
        if not proj:
            proj = str(settings["projection"].get("checkpoint", ""))
            if not proj or not Path(proj).is_file():
                raise UserError(
                    f"{cache.path}: a projected cache; its projection {proj or '(none)'} is not "
                    "here: pass it with --proj PROJ.pt"
                )
            recorded = str(settings["projection"].get("sha256", ""))
            check_recorded_model(proj, recorded, cache.path, "projection", "--proj PROJ.pt")
        space = "joint"
        feature_kind = str(source.get("feature_kind", ""))
    else:
        name, inner, feature_kind = (
            text_encoder or encoder,
            settings,
            str(attrs.get("feature_kind")),
        )
        recorded_name = "" if text_encoder else str(attrs.get("checkpoint_sha256", ""))
        space = cache.attrs.get("embedding_space", "joint")
        if space == "backbone" and not proj:
            raise UserError(
                f"{cache.path}: a backbone-feature cache: give the phase-1 projection with "
                "--proj PROJ.pt (or search a joint-space cache)"
            )
    if name in UNNAMED:
        raise UserError(
            f"{cache.path}: records no text encoder (encoder={encoder!r}); pass the one that "
            "made its captions with --text-encoder NAME_OR_FOLDER (and --pooling)"
        )
    if not text_encoder:
        check_recorded_model(name, recorded_name, cache.path, "text encoder", _TEXT_OPTION)
    pool = _pooling(name, inner, feature_kind, pooling)
    hf, encode = _hf(name, pool, inner, device)
    describe = f"{name} ({pool} pooling)"
    if not proj:
        if hf.dim != width:
            raise UserError(
                f"--text-encoder {name}: gives {hf.dim}-d vectors, but {cache.path} holds "
                f"{width}-d captions; use the encoder that made them"
            )
        return QueryEncoder(describe, encode)
    projection = load_projection(proj, device, trust)
    if hf.dim != projection.text_dim:
        raise UserError(
            f"{proj}: takes {projection.text_dim}-d text, but {name} gives {hf.dim}-d vectors"
        )
    heads = projection.heads

    @torch.no_grad()
    def projected(queries: list[str]) -> torch.Tensor:
        return heads.text(encode(queries).to(next(heads.parameters()).device)).cpu()

    audio_heads = heads if space == "backbone" else None
    return QueryEncoder(f"{describe} + projection {proj}", projected, audio_heads)

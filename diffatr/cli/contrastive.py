"""`diffatr train-contrastive` and `diffatr project`: phase 1 on backbone-feature caches, and
`diffatr cache synthetic-backbone`, a synthetic input to try them on."""

import click

from . import main
from .cache import cache as cache_group
from .options import CACHE, trust_checkpoint_option


@main.command("train-contrastive")
@click.argument("train_cache", type=CACHE)
@click.option("--val", "val_cache", type=CACHE, required=True, help="Validation cache.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Projection checkpoint to write (rewritten at every validation improvement).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Passes over the training captions (Mei et al.: 50; the rate drops x0.1 every 20).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Caption rows per batch, each other's negatives (paper: 32 AudioCaps, 24 Clotho).",
)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option(
    "--joint-dim",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Width J of the joint space; the heads' hidden layer is 2J.",
)
@click.option(
    "--keep-siblings",
    is_flag=True,
    help="Count other captions of a batch's clips as negatives, as Mei et al.'s code does "
    "(default: leave them out of the loss).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initialisation and batch order: same seed, same checkpoint.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
def train_contrastive_command(train_cache, val_cache, out, keep_siblings, **settings):
    """Train the phase-1 projection heads on a backbone-feature TRAIN_CACHE.

    Symmetric NT-Xent (tau 0.07) on cosine similarity, Adam, StepLR, grad-norm clip 2.0.
    Validates on --val after every epoch and keeps the best epoch (by text-to-audio R@1 + R@5
    + R@10) in --out; the per-epoch log goes to OUT.log.json and OUT.log.csv. Then run
    `diffatr project` on each split.
    """
    from ..contrastive import ContrastiveConfig, train_contrastive
    from ..outputs import check_outputs

    check_outputs({"--out": out})
    cfg = ContrastiveConfig(exclude_siblings=not keep_siblings, **settings)
    proj = train_contrastive(train_cache, val_cache, out, cfg, True, click.echo)
    m = proj.meta["val_metrics"]
    click.echo(
        f"wrote {out} (epoch {proj.meta['epoch']}: val t2a R@1 {m['t2a_R@1']:.1f}, "
        f"R@5 {m['t2a_R@5']:.1f}, R@10 {m['t2a_R@10']:.1f})"
    )


@main.command("project")
@click.argument("cache", type=CACHE)
@click.option(
    "--proj",
    type=click.Path(dir_okay=False),
    required=True,
    help="Projection checkpoint (from `diffatr train-contrastive`).",
)
@click.option("--out", type=CACHE, required=True, help="Joint-space cache to write.")
@click.option(
    "--no-sequences",
    is_flag=True,
    help="Leave out the frame and token features (default: copy them through unchanged; the "
    "co-attention head reads them).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default=None,
    help="Storage type of everything written, sequences included [default: the source's].",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@trust_checkpoint_option
def project_command(cache, proj, out, no_sequences, dtype, device, overwrite, trust_checkpoint):
    """Project a backbone-feature CACHE into the joint space with a trained projection.

    Writes OUT (format v1, embedding_space joint) with the same clips, captions and
    caption->clip rows, for `diffatr evaluate` and `diffatr train-head`. OUT appears only when
    complete.
    """
    from ..contrastive import project_cache
    from ..outputs import check_outputs

    check_outputs({"--out": out})
    result = project_cache(
        cache, proj, out, sequences=not no_sequences, dtype=dtype, device=device,
        overwrite=overwrite, trust=trust_checkpoint,
    )  # fmt: skip
    copied = f", {' and '.join(result.sequences)} copied" if result.sequences else ""
    click.echo(
        f"wrote {out}: {result.n_audio} clips, {result.n_text} captions, "
        f"{result.joint_dim}-d joint space{copied}"
    )


@cache_group.command("synthetic-backbone")
@click.argument("out", type=CACHE)
@click.option(
    "--clips", type=click.IntRange(min=1), default=1000, show_default=True, help="Number of clips."
)
@click.option(
    "--captions-per-clip",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="Captions of every clip.",
)
@click.option(
    "--audio-dim", type=click.IntRange(min=1), default=2048, show_default=True,
    help="Width of the audio features (CNN14 pre-fc1: 2048).",
)  # fmt: skip
@click.option(
    "--text-dim", type=click.IntRange(min=1), default=768, show_default=True,
    help="Width of the text features (BERT [CLS]: 768).",
)  # fmt: skip
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of this split's clips and noise."
)
@click.option(
    "--map-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the classes and the encoders' maps: the same for every split of one dataset.",
)
@click.option("--split", default="train", show_default=True, help="Split name to record.")
@click.option("--sequences", is_flag=True, help="Also write frame and token features.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def synthetic_backbone_command(out, clips, captions_per_clip, split, overwrite, **settings):
    """Write a synthetic backbone-feature cache (phase 1's input) to OUT.

    Audio and text are different random maps of one hidden latent, so they are not comparable
    until `diffatr train-contrastive` learns a joint space. Use one --map-seed and different
    --seed values for the train, validation and test splits.
    """
    from ..cache import BackboneSyntheticConfig, make_synthetic_backbone
    from ..outputs import check_outputs

    check_outputs({"OUT": out})
    cfg = BackboneSyntheticConfig(n_clips=clips, captions_per_clip=(captions_per_clip,), **settings)
    make_synthetic_backbone(out, cfg, split=split, overwrite=overwrite)
    click.echo(f"wrote {out}")

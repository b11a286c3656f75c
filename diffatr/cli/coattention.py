"""`diffatr train-coattention`: the co-attention head (Sun et al. 2024) on cached frames and
tokens; and `coattention_rerank`, the co-attention branch of `diffatr evaluate --head`."""

import click

from . import main
from .options import CACHE, given, parse_topk

# Options of `diffatr evaluate` that only a diffusion head reads (sampling and compilation).
DIFFUSION_ONLY = ("temperature", "steps", "eta", "seed", "no_compile")


@main.command("train-coattention")
@click.argument("train_cache", type=CACHE)
@click.option(
    "--val",
    "val_cache",
    type=CACHE,
    required=True,
    help="Validation cache: joint-space embeddings (their cosine top-k is re-ranked after each "
    "epoch) plus frames and tokens.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), required=True, help="Checkpoint file to write."
)
@click.option(
    "--variant",
    type=click.Choice(["single", "stacking", "iterating"]),
    default="single",
    show_default=True,
    help="single: one co-attention module; stacking: --layers modules with separate weights; "
    "iterating: one module applied --layers times (shared weights, the paper's best).",
)
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="L of stacking / iterating (ignored by single); every layer past the first runs once "
    "per (caption, clip) pair, so training time grows quickly with it.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="Passes.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=2),
    default=32,
    show_default=True,
    help="Pairs per batch; the loss scores all B x B (caption, clip) pairs of a batch.",
)
@click.option("--lr", type=float, default=3e-4, show_default=True, help="AdamW peak learning rate.")
@click.option(
    "--weight-decay",
    type=click.FloatRange(min=0),
    default=0.01,
    show_default=True,
    help="AdamW weight decay on weight matrices (not biases, not LayerNorms).",
)
@click.option(
    "--tau",
    type=click.FloatRange(min=0, min_open=True),
    default=0.07,
    show_default=True,
    help="NT-Xent temperature.",
)
@click.option(
    "--d-model", type=click.IntRange(min=1), default=128, show_default=True, help="Unit width."
)
@click.option(
    "--heads",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Attention heads (must divide --d-model).",
)
@click.option(
    "--ffn", type=click.IntRange(min=1), default=256, show_default=True, help="FFN hidden width."
)
@click.option(
    "--dropout",
    type=click.FloatRange(min=0, max=1, max_open=True),
    default=0.0,
    show_default=True,
    help="Dropout on each sublayer's output (MCAN: 0.1; it makes a batch ~70% slower).",
)
@click.option(
    "--val-topk",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Cosine top-k re-ranked when validating after each epoch.",
)
@click.option(
    "--chunk-captions",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Captions (and their clips' frames) read from the train cache at once.",
)
@click.option(
    "--buffer-chunks",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Chunks shuffled together; memory holds this many chunks' features.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the initialisation, dropout and batch order: same seed, same checkpoint.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
def train_coattention_command(train_cache, val_cache, out, **settings):
    """Train the co-attention head on the frames and tokens of TRAIN_CACHE (backbone or joint
    space; made with `diffatr extract ... --frames --tokens`).

    NT-Xent over all pairs of each batch, the batches streamed from the cache in chunks (the
    frames are never loaded whole). After every epoch the head re-ranks the --val split's
    cosine top-k and the best epoch (by R@1/5/10 of both directions) is kept in --out, rewritten
    at every improvement; the per-epoch log goes to OUT.log.json and OUT.log.csv.
    """
    from ..coattention import CoAttentionConfig
    from ..coattention.train import train_coattention
    from ..outputs import check_outputs

    check_outputs({"--out": out})
    cfg = CoAttentionConfig(**settings)
    head = train_coattention(train_cache, val_cache, out, cfg, True, click.echo)
    m = head.meta["val_metrics"]
    click.echo(
        f"wrote {out} (epoch {head.meta['epoch']}: val t2a R@1 {m['t2a_R@1']:.1f}, "
        f"a2t R@1 {m['a2t_R@1']:.1f})"
    )


def coattention_rerank(options: dict):
    """`diffatr evaluate --head CKPT` with a co-attention CKPT: `options` (evaluate's head
    options) into a CoRerankConfig. --topk and --alpha mean what they mean for a diffusion head;
    --mode gen (the default here) orders the top-k by the head alone, fusion adds
    alpha * softmax(s / tau)."""
    from ..coattention.config import CoRerankConfig

    wrong = given(DIFFUSION_ONLY)
    if wrong:
        raise click.UsageError(
            f"{', '.join(wrong)} only apply to a diffusion head; {options['head']} is a "
            "co-attention head (it takes --topk, --mode and --alpha)"
        )
    mode = options["mode"] if given(["mode"]) else "gen"
    return CoRerankConfig(topk=parse_topk(options["topk"]), mode=mode, alpha=options["alpha"])

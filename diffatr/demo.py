"""`diffatr demo`: the cache-first pipeline on the built-in synthetic default, no data needed.

Reads nothing. Writes, into one folder: the synthetic test split (`synthetic_test.h5`), the
cosine baseline's metrics (`metrics_cosine.json`) and the DCASE-style submission
(`submission_cosine.csv`).
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cache import SyntheticConfig, make_synthetic
from .errors import UserError
from .evaluate import EvalConfig, evaluate_cache, format_table, write_json


@dataclass(frozen=True)
class DemoConfig:
    n_clips: int = 1000  # clips in the synthetic test split (5 captions each)
    seed: int = 0  # the synthetic data's seed


@dataclass
class DemoResult:
    out_dir: Path
    files: dict[str, Path]
    metrics: dict[str, float]


def run_demo(
    out_dir: str | None, cfg: DemoConfig = DemoConfig(), echo: Callable[[str], None] = print
) -> DemoResult:
    """Build the synthetic split, evaluate the cosine baseline, print the table."""
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="diffatr-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "cache": out / "synthetic_test.h5",
        "metrics": out / "metrics_cosine.json",
        "submission": out / "submission_cosine.csv",
    }
    if files["cache"].exists():
        raise UserError(f"{out}: already holds a demo; pass another --out or remove it")
    echo("diffatr demo: the data below are SYNTHETIC (a generated joint embedding space with")
    echo("clusters, hub clips and a modality gap), not a real dataset.")
    make_synthetic(files["cache"], SyntheticConfig(n_clips=cfg.n_clips, seed=cfg.seed))
    echo(f"wrote the synthetic test split ({cfg.n_clips} clips x 5 captions): {files['cache']}")
    paper = evaluate_cache(files["cache"], EvalConfig(protocol="paper"))
    write_json(files["metrics"], paper.to_json())
    dcase = evaluate_cache(
        files["cache"], EvalConfig(protocol="dcase"), submission=files["submission"]
    )
    echo("")
    echo(format_table({"cosine": paper.metrics}, "paper"))
    echo("")
    echo(format_table({"cosine": dcase.metrics}, "dcase"))
    echo("")
    echo(f"metrics: {files['metrics']}")
    echo(f"DCASE submission CSV: {files['submission']}")
    echo("On real data: build a cache of Clotho or AudioCaps embeddings (format in the README),")
    echo("then run `diffatr cache verify CACHE` and `diffatr evaluate CACHE`.")
    return DemoResult(out_dir=out, files=files, metrics=paper.metrics)

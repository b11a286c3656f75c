"""`diffatr evaluate`: retrieval metrics of a cache, by cosine or with a trained head."""

import click

from ..checkpoint_kinds import checkpoint_kind
from . import main
from .coattention import coattention_rerank
from .options import CACHE, given, only_with, only_with_head, parse_topk, trust_checkpoint_option

REPORT_TOP = 5  # candidates per query the --report page lists under each system


@main.command()
@click.argument("cache", type=CACHE)
@click.option(
    "--protocol",
    type=click.Choice(["paper", "dcase", "dcase2025"]),
    default="paper",
    show_default=True,
    help="paper: both directions, R@1/5/10, mAP@10, medR, meanR (Mei et al.); "
    "dcase: text-to-audio with a jackknife 95% interval for mAP@10 (Task 6b); "
    "dcase2025: text-to-audio mAP@16 with several relevant clips per query (--relevance) "
    "and its jackknife interval (DCASE 2025 Task 6).",
)
@click.option(
    "--relevance",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --protocol dcase2025: the relevance annotations CSV (columns query, "
    "audio_filenames, as the task published them) [default: each caption's own clip].",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the metrics, counts and settings to this JSON file.",
)
@click.option(
    "--submission",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --protocol dcase: write the Task 6b submission CSV "
    "(caption,file_name_1..file_name_10) here; with dcase2025: the 2025 predictions CSV "
    "(index,<clip ids>: every caption's score for every clip).",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where to compute similarities: auto (CUDA when present), cpu, cuda, cuda:1.",
)
@click.option(
    "--max-elements",
    type=click.IntRange(min=1),
    default=None,
    help="Similarity entries held in memory at once, 4 bytes each [default: 4194304, "
    "16 MB]; lower it to use less memory on huge galleries.",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the full cache check (NaN, index ranges) that runs before ranking.",
)
@click.option(
    "--head",
    type=click.Path(dir_okay=False, exists=False),
    default=None,
    help="A diffusion-head checkpoint (from `diffatr train-head`) or a co-attention one (from "
    "`diffatr train-coattention`; it also reads the cache's frames and tokens): re-rank each "
    "query's cosine top-k with it and print both rankings.",
)
@click.option(
    "--topk",
    default="32",
    show_default=True,
    help="With --head or --baseline: candidates re-ranked per query, or `all` for the whole "
    "gallery.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="With --head: fusion weight (>= 0, so the top-k stays on top).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="With --head: softmax temperature of the boost.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=None,
    help="With --head: DDIM sampling steps [default: the K the head was trained with].",
)
@click.option(
    "--eta", type=click.FloatRange(min=0), default=0.0, show_default=True, help="DDIM eta."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of x_K (sampling).")
@click.option(
    "--mode",
    type=click.Choice(["fusion", "gen"]),
    default="fusion",
    show_default=True,
    help="fusion: cosine + alpha * softmax(x0_hat / T) (Gen+Dis); gen: order the top-k by the "
    "head alone (Gen). A co-attention head defaults to gen; its fusion adds "
    "alpha * softmax(s / tau) of its pair scores s.",
)
@click.option(
    "--no-compile",
    is_flag=True,
    help="Re-rank without a C/C++ compiler: a top-k's DDIM loop through numba (built once "
    "per machine, in seconds) instead of the C loop, anything else in eager PyTorch instead "
    "of torch.compile'd code (slower).",
)
@click.option(
    "--baseline",
    type=click.Choice(["dual-softmax", "inverted-softmax", "qb-norm"]),
    default=None,
    help="Re-rank each query's cosine top-k with a training-free baseline and print both "
    "rankings: dual-softmax (Cheng et al. 2021), inverted-softmax (Smith et al. 2017), qb-norm "
    "(Bogolin et al. 2022, needs --bank).",
)
@click.option(
    "--bank",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --baseline qb-norm: the query bank, a cache of the training split in the same "
    "joint space (its captions normalise text-to-audio, its clips audio-to-text).",
)
@click.option(
    "--beta",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --baseline inverted-softmax or qb-norm: inverse temperature of exp(beta * S) "
    "[default: 20, QB-Norm's].",
)
@click.option(
    "--dsl-temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --baseline dual-softmax: temperature T of the prior softmax over queries, on "
    "cosine similarities [default: 0.01, i.e. softmax(100 * cos)].",
)
@click.option(
    "--report",
    type=click.Path(file_okay=False),
    default=None,
    help="With --head or --baseline: write DIR/index.html, a self-contained page of the queries "
    "whose rank the re-ranker changed (top 5 under each, sortable and filterable), the metrics "
    "and recall curves; it opens from disk.",
)
@trust_checkpoint_option
@click.option(
    "--audio-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="With --report: the clips' audio folder; the page gets a player per clip (relative "
    "links, nothing copied).",
)
def evaluate(
    cache,
    protocol,
    relevance,
    report,
    audio_dir,
    json_out,
    submission,
    device,
    max_elements,
    no_verify,
    baseline,
    bank,
    beta,
    dsl_temperature,
    **head,
):
    """Rank CACHE by cosine similarity (and, with --head, by a diffusion or co-attention head,
    or with --baseline, by a training-free re-ranker); print metrics.

    \b
    diffatr evaluate test.h5
    diffatr evaluate test.h5 --head head.pt --topk 32 --json results.json
    diffatr evaluate test.h5 --baseline qb-norm --bank train.h5
    """
    from ..api.evaluation import evaluate_systems
    from ..evaluate import EvalConfig, format_table, write_json
    from ..outputs import check_outputs

    check_outputs({"--json": json_out, "--submission": submission}, {"--report": report})
    chunking = {"max_elements": max_elements} if max_elements else {}
    if relevance is not None and protocol != "dcase2025":
        raise click.UsageError("--relevance only applies with --protocol dcase2025")
    if audio_dir and not report:
        raise click.UsageError("--audio-dir only applies with --report DIR")
    if report and head["head"] is None and baseline is None:
        raise click.UsageError(
            "--report compares a re-ranking with cosine: give --head or --baseline"
        )
    record = {"per_query_top": REPORT_TOP} if report else {}
    cfg = EvalConfig(
        protocol=protocol,
        relevance=relevance or "",
        device=device,
        verify=not no_verify,
        **chunking,
        **record,
    )
    progress = True  # a bar on a terminal, plain lines in a log
    baseline_options = {"bank": bank, "beta": beta, "dsl_temperature": dsl_temperature}
    rerank, reranker = None, {}
    if baseline is not None:
        reranker = {"baseline": _baseline_config(baseline, baseline_options, head), "bank": bank}
    elif given(baseline_options):
        raise click.UsageError(only_with(given(baseline_options), "--baseline NAME"))
    elif head["head"] is None:
        if given(head):
            raise click.UsageError(only_with_head(given(head)))
    elif checkpoint_kind(head["head"], head["trust_checkpoint"]) == "coattention_head":
        rerank = coattention_rerank(head)
    else:
        from ..diffusion_head import RerankConfig

        rerank = RerankConfig(
            topk=parse_topk(head["topk"]),
            alpha=head["alpha"],
            temperature=head["temperature"],
            steps=head["steps"],
            eta=head["eta"],
            seed=head["seed"],
            mode=head["mode"],
            compiled=not head["no_compile"],
        )
    results = evaluate_systems(
        cache,
        cfg,
        head["head"],
        rerank,
        submission=submission,
        progress=progress,
        trust=head["trust_checkpoint"],
        **reranker,
    )
    c = next(iter(results.values())).counts
    click.echo(f"{cache}: {c['scored_captions']} captions scored over {c['clips']} clips")
    click.echo(format_table({name: r.metrics for name, r in results.items()}, protocol))
    if json_out:
        payload = next(iter(results.values())).to_json()
        if len(results) > 1:
            payload = {name: r.to_json() for name, r in results.items()}
        write_json(json_out, payload)
        click.echo(f"wrote {json_out}")
    if submission:
        click.echo(f"wrote {submission}")
    if report:
        from ..evaluate.html_report import write_query_report

        page, summary = write_query_report(report, cache, results, audio_dir)
        click.echo(summary)
        click.echo(f"wrote {page}")


def _baseline_config(name, options, head):
    """`--baseline NAME`: the options into a BaselineConfig."""
    from ..evaluate.baselines import BaselineConfig

    if head["head"] is not None:
        raise click.UsageError("--head and --baseline: give one re-ranker per run")
    misplaced = given([n for n in head if n != "topk"])
    if misplaced:
        raise click.UsageError(only_with_head(misplaced))
    wrong = {
        "dsl_temperature": name != "dual-softmax",
        "beta": name == "dual-softmax",
        "bank": name != "qb-norm",
    }
    misplaced = given([n for n in options if wrong[n]])
    if misplaced:
        verb = "does" if len(misplaced) == 1 else "do"
        raise click.UsageError(f"{', '.join(misplaced)} {verb} not apply to --baseline {name}")
    settings = {"beta": options["beta"], "temperature": options["dsl_temperature"]}
    return BaselineConfig(
        name=name,
        topk=parse_topk(head["topk"]),
        **{k: v for k, v in settings.items() if v is not None},
    )

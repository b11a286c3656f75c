"""Click parameter types shared by the commands."""

import click

CACHE = click.Path(dir_okay=False, path_type=str)


def parse_topk(text: str) -> int | None:
    """`--topk`: a positive integer, or `all` (None: the whole gallery)."""
    if text == "all":
        return None
    if not (text.isdigit() and int(text) > 0):
        raise click.BadParameter("a positive integer or `all`", param_hint="--topk")
    return int(text)


def given(names) -> list[str]:
    """Those of the parameters `names` that were given on the command line, as `--flags`."""
    ctx = click.get_current_context()
    source = click.core.ParameterSource.COMMANDLINE
    return [f"--{n.replace('_', '-')}" for n in names if ctx.get_parameter_source(n) == source]


def only_with(names: list[str], option: str) -> str:
    """The usage error for options `names` given without `option` they need."""
    verb = "applies" if len(names) == 1 else "apply"
    return f"{', '.join(names)} {verb} only with {option}"


def only_with_head(names: list[str]) -> str:
    """The usage error for head options given without --head (--topk also serves --baseline)."""
    if names == ["--topk"]:
        return "--topk applies only with --head CHECKPOINT or --baseline NAME"
    return only_with(names, "--head CHECKPOINT")


def parse_seeds(text: str, hint: str = "--seeds") -> tuple[int, ...]:
    """`--seeds 0,1,2`: distinct integers, comma-separated."""
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter("a comma-separated list of integers", param_hint=hint) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter("at least one seed, none twice", param_hint=hint)
    return seeds


def trust_checkpoint_option(command):
    """`--trust-checkpoint`, the one way to load a checkpoint that needs full unpickling."""
    return click.option(
        "--trust-checkpoint",
        is_flag=True,
        help="Load checkpoints that weights-only loading refuses, as full pickles: this runs "
        "code from the file, so only for files from a source you trust (see docs/trust.md).",
    )(command)


joint_model_option = click.option(
    "--joint-model",
    default="",
    help="For a joint model's cache: the model to embed queries with [default: the one the "
    "cache names, loaded only if its sha256 is the one the cache recorded].",
)

"""The `diffatr` command line. Thin: parse options into a config, call one function, print.

User errors (`UserError`) print as one line, `Error: ...`, exit status 1, no traceback.
One module per stage's commands; this one holds the group and the error handling.
"""

import atexit
import gc
import sys

import click

from .. import __version__, threads
from ..errors import UserError


class _Group(click.Group):
    """A click group that turns user errors into one-line messages."""

    def invoke(self, ctx):
        # Registered first, so it runs after every other exit handler: the objects left at
        # exit (torch.compile's modules hold millions) are frozen, not traversed by the
        # interpreter's last garbage collections. Measured: exit after a compiled call 2.2 s
        # -> 0.3 s, after `import torch` 0.8 s -> 0.3 s. Only for cycles left at exit: every
        # file a command writes is written and closed (renamed into place) before it returns.
        atexit.register(gc.freeze)
        try:
            threads.check_setting()  # a bad DIFFATR_THREADS before the work, not hours into it
            return super().invoke(ctx)
        except UserError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:  # permissions, a full disk, a path that is a folder: not a bug
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="diffatr")
def main():
    """diffatr: train and evaluate audio-text retrieval heads on cached embeddings.

    Caches are HDF5 files (format v1, docs/cache-format.md): one per dataset split, with clip and
    caption embeddings. Start with `diffatr demo`.
    """


from . import ablate, cache, coattention, contrastive, demo, evaluate, extract, head, search, serve  # noqa: E402  (they register on `main`)

__all__ = [
    "ablate",
    "cache",
    "coattention",
    "contrastive",
    "demo",
    "evaluate",
    "extract",
    "head",
    "main",
    "search",
    "serve",
]

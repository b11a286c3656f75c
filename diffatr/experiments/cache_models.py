"""Models a cache names in its own attributes: loaded only when they are the ones it recorded.

Reads: the named model's bytes (a checkpoint file, a model folder's weight files, or a local
Hugging Face cache snapshot of a hub name). Writes nothing.

A cache is a file anyone can hand you; the model paths in its attributes are its author's word,
not yours. `diffatr search` therefore loads a model named only by the cache (its joint model,
its text encoder, its projection) when that model's sha256 equals the one the cache recorded
when it was made: `checkpoint_sha256` (`extract`: the checkpoint file's sha256, or for a model
folder / hub name the sha256 of its weight files' bytes in name order) or the projection's
`sha256` (`project`). No recorded digest, a missing model or another digest is one line naming
the model and the option that passes it explicitly; a model the user names on the command line
is theirs to vouch for and is not checked.
"""

import os

from ..checkpoints import file_sha256
from ..errors import UserError
from ..extract.text import model_digest


def digest_of(name: str) -> str | None:
    """The recorded-style digest of a model: a file's sha256, else a model folder's (or hub
    name's local snapshot's) weights digest; None when it is not here."""
    if os.path.isfile(name):
        return file_sha256(name)
    return model_digest(name)


def check_recorded_model(name: str, recorded: str, cache: str, what: str, option: str) -> None:
    """Refuse, in one line, to load `name` (the cache's `what`) unless its digest is the
    `recorded` one; `option` is how the user passes the model themselves."""
    if not recorded:
        raise UserError(
            f"{name}: {cache} names this {what} but records no checksum of it, so it is not "
            f"loaded; if you trust it, pass it yourself with {option}"
        )
    found = digest_of(name)
    if found is None:
        raise UserError(f"{name}: not found here ({what} named by {cache}); pass it with {option}")
    if found != recorded:
        raise UserError(
            f"{name}: its sha256 {found[:16]}... is not the {recorded[:16]}... that {cache} "
            f"recorded for its {what}, so it is not loaded; pass the one you mean with {option}"
        )

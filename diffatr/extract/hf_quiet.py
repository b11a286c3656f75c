"""Loading a Hugging Face model without its progress bars, leaving the process as found.

transformers 5 draws a `Loading weights: 100%|...|` bar for every `from_pretrained`; in a log
redirected to a file it is noise between our own progress lines (`diffatr/progress.py`). Inside
`quiet_transformers()` transformers' own bar switch is off; on leaving, it is set back to what
it was (on, off, or set by the user), so a caller's own transformers use is unchanged.
Reads and writes nothing.
"""

import contextlib


@contextlib.contextmanager
def quiet_transformers():
    """No transformers progress bars inside the block; the previous setting restored after."""
    from transformers.utils import logging as hf_logging

    # The module flag itself, not disable_progress_bar(): that one also switches huggingface_hub's
    # bars globally, and enable_progress_bar() would not restore a user's own hub setting.
    before = getattr(hf_logging, "_tqdm_active", None)
    if before is None:  # a transformers without the switch: nothing to silence or restore
        yield
        return
    hf_logging._tqdm_active = False
    try:
        yield
    finally:
        hf_logging._tqdm_active = before

"""What long jobs tell the user while they run: progress and one-line warnings, on stderr.

Reads and writes nothing but stderr.
"""

import sys

from tqdm import tqdm


def warn(message: str) -> None:
    """One `warning: ...` line on stderr that does not break a progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)

"""What long jobs tell the user while they run: progress and one-line warnings, on stderr.

Reads nothing; writes stderr only. `Progress` is the one progress display of every long loop
(extraction, both trainings, ranking): a tqdm bar when stderr is a terminal, and otherwise
(a job scheduler, `nohup`, CI, a pipe) plain lines a log keeps, at a steady pace:

    epoch 2/5: 1200/3125 batch (38%), 41.3 batch/s, 47s left, loss 2.1034
    epoch 2/5: 3125/3125 batch in 1m16s, 41.1 batch/s, loss 2.0170

one at most every `every` seconds (30) while the loop runs, and one when it ends (for loops that
`leave` a summary, e.g. each training epoch, or any loop that ran long enough to print).

Rates and time left are measured from the end of the first step, and after any `note_warmup`
(e.g. compiling a kernel) from its end: a first step that compiles code takes seconds to
minutes and would make the rate a lie (`0.0217 batch/s, 3h59m left` for a one-minute job).
Until a step after it has finished, a line shows the count only. `note(message)` prints a line
(e.g. "compiling the head's kernels ...") only while a progress display is on.
"""

import sys
import time
from collections.abc import Callable, Iterable, Iterator

from tqdm import tqdm

EVERY_SECONDS = 30.0  # plain progress lines: at most one per this many seconds
_ACTIVE: list["Progress"] = []  # displays now open and enabled, innermost last


def warn(message: str) -> None:
    """One `warning: ...` line on stderr that does not break a progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def duration(seconds: float) -> str:
    """42s, 3m05s, 2h07m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of one loop, with the part of tqdm's interface the project uses:
    `Progress(iterable, total=, desc=, unit=, disable=, leave=)`, iteration, `update(n)`,
    `set_postfix(**values)`, `close()` and use as a context manager.

    `disable` silences it; otherwise a tty `file` (default stderr) gets a tqdm bar and anything
    else plain lines (module docstring). `clock` is for tests.
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        disable: bool = False,
        leave: bool = True,
        every: float = EVERY_SECONDS,
        file=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.file = file if file is not None else sys.stderr
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.leave, self.every, self.clock = leave, every, clock
        tty = not disable and _isatty(self.file)
        self.plain = not disable and not tty
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            disable=not tty,
            leave=leave,
            file=self.file,
            dynamic_ncols=True,
        )
        self.n, self.postfix, self.printed, self.closed = 0, "", False, False
        self.start = self.last = clock()
        self.rate_from: tuple[float, int] | None = None  # (time, count) the rate counts from
        if not disable:
            _ACTIVE.append(self)

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)
        if self.rate_from is None:  # the first step may carry a warm-up: rates start after it
            self.restart_rate()
        if self.plain and self.clock() - self.last >= self.every:
            self._line(final=False)

    def set_postfix(self, **values) -> None:
        self.bar.set_postfix(**values)
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def restart_rate(self) -> None:
        """Measure the rate (and so the time left) from now on."""
        self.rate_from = (self.clock(), self.n)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self.bar.close()
        if self.plain and (self.leave or self.printed):
            self._line(final=True)

    def _line(self, final: bool) -> None:
        now = self.clock()
        self.last, self.printed = now, True
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        head = f"{self.desc}: " if self.desc else ""
        done = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        if final:
            text = f"{head}{done} {self.unit} in {duration(elapsed)}, {rate:.3g} {self.unit}/s"
        else:
            text = f"{head}{done} {self.unit}"
            if self.total:
                text += f" ({100 * self.n // self.total}%)"
            t0, n0 = self.rate_from or (now, self.n)
            if self.n > n0 and now > t0:  # a step finished since the warm-up: a true rate
                rate = (self.n - n0) / (now - t0)
                text += f", {rate:.3g} {self.unit}/s"
                if self.total:
                    text += f", {duration((self.total - self.n) / rate)} left"
        print(text + self.postfix, file=self.file, flush=True)


def note(message: str) -> None:
    """A line on the innermost open progress display's stream; nothing when none is on."""
    for bar in reversed(_ACTIVE):
        try:
            tqdm.write(message, file=bar.file)
            return
        except (ValueError, OSError):  # a display left open (an exception ended its loop)
            continue  # on a stream since closed: a note is never worth failing the work for


def note_warmup() -> None:
    """A warm-up (compiling, loading compiled code) just ended: open displays measure their
    rate and time left from now."""
    for bar in _ACTIVE:
        bar.restart_rate()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False

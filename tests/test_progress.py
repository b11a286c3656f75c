"""diffatr/progress.py: a tqdm bar on a terminal; in a log, plain lines at a steady pace (at
most one per `every` seconds, and one when a loop that leaves a summary ends); nothing when
disabled. A fake clock stands in for time."""

import io
import re

from diffatr.progress import Progress, duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_in_a_log_at_most_every_30_s_and_one_at_the_end() -> None:
    log, clock = io.StringIO(), Clock()
    bar = Progress(total=100, desc="epoch 1/2", unit="batch", file=log, clock=clock)
    for _ in range(100):
        clock.t += 1.0  # one batch a second
        bar.update(1)
        if bar.n == 50:
            bar.set_postfix(loss="0.1234")
    bar.close()
    bar.close()  # once only
    lines = log.getvalue().splitlines()
    assert lines == [
        "epoch 1/2: 30/100 batch (30%), 1 batch/s, 1m10s left",
        "epoch 1/2: 60/100 batch (60%), 1 batch/s, 40s left, loss 0.1234",
        "epoch 1/2: 90/100 batch (90%), 1 batch/s, 10s left, loss 0.1234",
        "epoch 1/2: 100/100 batch in 1m40s, 1 batch/s, loss 0.1234",
    ]


def test_iterating_and_short_loops() -> None:
    log, clock = io.StringIO(), Clock()

    def items():
        for i in range(4):
            clock.t += 0.5
            yield i

    assert list(Progress(items(), total=4, desc="x", unit="clip", file=log, clock=clock)) == [
        0, 1, 2, 3,
    ]  # fmt: skip
    assert log.getvalue() == "x: 4/4 clip in 2s, 2 clip/s\n"  # a short loop: its summary only
    quiet = io.StringIO()
    with Progress(total=4, unit="query", leave=False, file=quiet, clock=clock) as bar:
        bar.update(4)
    assert quiet.getvalue() == ""  # leave=False and quick: nothing at all
    with Progress(range(3), file=quiet, disable=True, clock=clock) as bar:
        for _ in bar:
            clock.t += 100
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar_and_no_plain_lines() -> None:
    term, clock = Terminal(), Clock()
    with Progress(total=10, desc="extract", unit="clip", file=term, clock=clock) as bar:
        for _ in range(10):
            clock.t += 60
            bar.update(1)
    out = term.getvalue()
    assert "\r" in out and "10/10" in out
    assert not re.search(r"^extract: \d+/10 clip", out, re.M)


def test_duration() -> None:
    assert [duration(s) for s in (0, 42.4, 65, 3599, 3600, 7625)] == [
        "0s", "42s", "1m05s", "59m59s", "1h00m", "2h07m",
    ]  # fmt: skip

"""An ablation spread over the processes torchrun starts: every process takes the next run it can.

Reads: the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE). Writes
what `runner.Ablation` writes, plus the claims of `claims.py` and, in each run folder a process
starts, a line in `starts.log` (host, pid, rank: who started it, once per start).

Every rank builds the same list of *units*, in the order the runs depend on each other: the
splits of each seed (phase 1 and the projections, backbone data only), the heads, the
co-attention heads, the evaluations. A unit is a call of the runner (`Ablation.splits`, `head`,
`evaluate`, ...) that does its runs through `_once`; here `_once` first claims the run, and a
run claimed by a live process, or one whose inputs are not done yet, raises `Busy`: the rank
drops that unit for now and tries the next one, and comes back to it later. So each run is done
once, by the rank that claimed it, and only after the runs it reads are done (a unit reaches a
run only through the calls that produce its inputs, and those are done or `Busy`). A rank
finishes when all its units completed (every run of the table is done); rank 0 then writes the
tables with the ordinary one-process code, which finds every run done.

Stacking: a row's seeds trained together (`--stack`) or evaluated together (joint-space data,
several seeds) are one unit: its rank claims all the runs it fills or none, and never does one
of them alone while the group is pending, so the groups are those of one process and the numbers
equal to the bit.

Resources: on CUDA each rank's "cuda" is cuda:LOCAL_RANK (`torch.cuda.set_device`); on the CPU
each rank gets its share of the cores, cores // ranks on this machine (or DIFFATR_THREADS=N, as
`threads.py`), as the thread count it enters training with; both are restored on exit.
"""

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..extract.distributed import Ranks, ranks_from_env
from ..progress import EVERY_SECONDS, duration
from .claims import STALE_AFTER, Claims
from .config import AblationConfig, Dataset
from .grids import HEAD_SYSTEMS, row_fits, table_pairs
from .runner import Ablation, _space
from .store import Splits

STARTS = "starts.log"
SCAN = 1.0  # seconds between two looks of rank 0 at every run folder (the progress board)
POLL = (0.02, 0.5)  # seconds between looks while every unit waits: first, at most (doubling)


class Busy(Exception):
    """A run the unit needs is claimed by a live process, or waits for one that is."""


@dataclass(frozen=True)
class Unit:
    what: str
    run: Callable[[], object]


def run_ablation(
    out: str | os.PathLike,
    cfg: AblationConfig,
    tables: list[str],
    datasets: list[Dataset],
    echo: Callable[[str], None] = print,
    progress: bool = False,
) -> Ablation:
    """`diffatr ablate`: in one process, or as one of torchrun's (WORLD_SIZE set, any size)."""
    if "WORLD_SIZE" not in os.environ:
        runner = Ablation(out, cfg, echo=echo, progress=progress)
        runner.run(tables, datasets)
        echo(f"{len(runner.ran)} run(s) done, {len(runner.reused)} found complete and reused")
        return runner
    ranks = ranks_from_env()
    Ablation.check(tables, datasets)
    tell = _prefixed(echo, ranks)
    with rank_resources(ranks, cfg.device):
        claims = Claims(ranks.rank, stale_after())
        runner = SharedAblation(out, cfg, tell, progress and ranks.is_main, claims)
        runner.share(tables, datasets, ranks)
    n = max(1, len(runner.ran))
    tell(
        f"{len(runner.ran)} run(s) done here, {len(runner.reused)} found complete; "
        f"scheduling per run done here: {1000 * runner.claim_seconds / n:.1f} ms claiming, "
        f"{1000 * runner.busy_seconds / n:.1f} ms trying units that had to wait, "
        f"{1000 * runner.wait_seconds / n:.1f} ms asleep while all waited"
    )
    return runner


class SharedAblation(Ablation):
    """`Ablation` whose runs are claimed first, and which may give a unit up (`Busy`)."""

    def __init__(self, out, cfg: AblationConfig, echo, progress: bool, claims: Claims):
        super().__init__(out, cfg, echo, progress)
        self.claims = claims
        # what the spreading costs (each rank's last line, bench/): claiming and releasing
        # runs; units tried up to a run they had to wait for; asleep while every unit waits
        self.claim_seconds = self.busy_seconds = self.wait_seconds = 0.0
        self._splits: dict[tuple, Splits] = {}
        n = len(cfg.seeds)
        self.stacking = n >= 2 and _stacks(cfg, self.device)

    # -- the schedule -----------------------------------------------------------------------
    def share(self, tables: list[str], datasets: list[Dataset], ranks: Ranks) -> None:
        """Do this rank's part of the tables' runs; on rank 0, then write the tables."""
        plan = self.plan(tables, datasets) if ranks.is_main else []
        pending = self.units(tables, datasets)
        board = Board(plan, self.claims, self.echo) if ranks.is_main else None
        poll = POLL[0]
        with self.claims.heartbeat():
            while pending:
                ran_before = len(self.ran)
                for unit in pending:
                    t, claiming, ran = time.perf_counter(), self.claim_seconds, len(self.ran)
                    try:
                        unit.run()
                    except Busy:
                        if len(self.ran) == ran:  # no run done on the way: time lost
                            claiming = self.claim_seconds - claiming
                            self.busy_seconds += time.perf_counter() - t - claiming
                        continue
                    finally:
                        self._release()
                    pending.remove(unit)  # done: look again from the first unit
                    poll = POLL[0]
                    break
                else:  # every unit waits for another process
                    if board:
                        board.show()
                    if len(self.ran) > ran_before:
                        continue  # some runs were done on the way: look again at once
                    t = time.perf_counter()
                    time.sleep(poll)
                    self.wait_seconds += time.perf_counter() - t
                    poll = min(POLL[1], 2 * poll)
                    continue
                if board:
                    board.show()
        if board:
            board.show(force=True)
            self.run(tables, datasets)  # every run is done: reads the records, writes tables

    def units(self, tables: list[str], datasets: list[Dataset]) -> list[Unit]:
        """Every table's work in the order its runs depend on each other (module docstring)."""
        splits, heads, coheads, evals = [], [], [], []
        seeds = self.cfg.seeds
        for name in tables:
            for s, t in table_pairs(name, datasets):
                rows = [r for r in self.table_rows(name) if row_fits(r, self.cfg)]
                for seed in seeds:
                    splits.append(Unit(f"{s.name} seed {seed}", _call(self.splits, s, seed, t)))
                settings = []
                for row in rows:
                    if row.system in HEAD_SYSTEMS and row.head not in settings:
                        settings.append(row.head)
                for head in settings:
                    if self.stacking:
                        heads.append(Unit(f"heads {head}", _call(self._head_group, head, s, t)))
                        continue
                    for seed in seeds:
                        work = _call(self._head_alone, head, s, seed, t)
                        heads.append(Unit(f"head {head} seed {seed}", work))
                if self.cfg.coattention is not None:
                    for seed in seeds:
                        work = _call(self._coattention, s, seed, t)
                        coheads.append(Unit(f"co-attention seed {seed}", work))
                # joint data: every seed's head re-ranks one test cache, together (runner.py)
                together = len(seeds) >= 2 and _space(s.train) == "joint"
                for row in rows:
                    if row.system in HEAD_SYSTEMS and together:
                        evals.append(Unit(f"{row.label} seeds", _call(self._eval_group, row, s, t)))
                        continue
                    for seed in seeds:
                        work = _call(self._eval_alone, row, s, seed, t)
                        evals.append(Unit(f"{row.label} seed {seed}", work))
        return splits + heads + coheads + evals

    def plan(self, tables: list[str], datasets: list[Dataset]) -> list[Path]:
        """Every run folder of the tables, without doing any (for the progress board)."""
        planner = _Planner(self.out, self.cfg, echo=lambda _: None)
        for name in tables:
            for s, t in table_pairs(name, datasets):
                planner.table_records(name, s, t)
        return list(dict.fromkeys(planner.folders))

    # -- units ------------------------------------------------------------------------------
    def _head_group(self, overrides: dict, source: Dataset, target: Dataset) -> None:
        """A head setting's seeds as one stacked computation (the pending ones, as one process
        would), then any single pending seed alone."""
        from .grids import Row

        self.stacked_heads([Row("", head=overrides)], source, target)
        for seed in self.cfg.seeds:
            self.head(self.splits(source, seed, target), overrides, seed, alone=True)

    def _head_alone(self, overrides: dict, source: Dataset, seed: int, target: Dataset) -> None:
        self.head(self.splits(source, seed, target), overrides, seed)

    def _coattention(self, source: Dataset, seed: int, target: Dataset) -> None:
        self.coattention_head(self.splits(source, seed, target), seed)

    def _eval_group(self, row, source: Dataset, target: Dataset) -> None:
        self.stacked_evaluations([row], source, target)
        for seed in self.cfg.seeds:
            self.evaluate(row, self.splits(source, seed, target), seed)

    def _eval_alone(self, row, source: Dataset, seed: int, target: Dataset) -> None:
        self.evaluate(row, self.splits(source, seed, target), seed)

    # -- claims -----------------------------------------------------------------------------
    def splits(self, source: Dataset, seed: int, target: Dataset) -> Splits:
        """Kept once complete: units that wait are tried again and again, and each try would
        open the caches again (`_space`) and look at every phase-1 run."""
        key = (source, seed, target)
        if key not in self._splits:
            self._splits[key] = super().splits(source, seed, target)
        return self._splits[key]

    def head(self, splits: Splits, overrides: dict, seed: int, alone: bool = False) -> Path:
        """With stacking, a pending head is trained only by its group's unit (`_head_group`)."""
        if self.stacking and not alone:
            folder, _, _ = self.head_job(splits, overrides, seed)
            if self.store.done(folder) is None:
                raise Busy(folder.name)
        return super().head(splits, overrides, seed)

    def _once(self, folder: Path, what: str, work: Callable[[], object]) -> dict:
        if self.store.done(folder) is None:
            self._take([folder])

            def checked() -> object:
                result = work()
                if not self.claims.holds(folder):  # stood still too long: another took it over
                    self.echo(f"lost the claim on {folder.name}: another process redoes it")
                    raise Busy(folder.name)
                return result

            return super()._once(folder, what, checked)
        return super()._once(folder, what, work)

    def _hold(self, folders: list[Path]) -> None:
        self._take(folders)

    def _take(self, folders: list[Path]) -> None:
        """Claim every run of `folders` (all still pending), or none and raise `Busy`."""
        t = time.perf_counter()
        try:
            for folder in folders:
                if not self.claims.take(folder):
                    raise Busy(folder.name)
            if any(self.store.done(f) is not None for f in folders):
                raise Busy(folders[0].name)  # done meanwhile: the unit looks again
            for folder in folders:  # the log of starts: a run started twice was taken over
                with open(folder / STARTS, "a", encoding="utf-8") as f:
                    f.write(f"{socket.gethostname()} {os.getpid()} rank {self.claims.rank}\n")
        except Busy:
            self.claims.release_all()
            raise
        finally:
            self.claim_seconds += time.perf_counter() - t

    def _release(self) -> None:
        t = time.perf_counter()
        self.claims.release_all()
        self.claim_seconds += time.perf_counter() - t


class _Planner(Ablation):
    """Walks the tables as `Ablation` does, noting each run folder instead of doing it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.folders: list[Path] = []

    def _once(self, folder: Path, what: str, work: Callable[[], object]) -> dict:
        self.folders.append(folder)
        return {}

    def stacked_heads(self, *args) -> None:
        pass  # the same runs as the heads `head` notes

    def stacked_evaluations(self, *args) -> None:
        pass  # the same runs as `evaluate` notes


class Board:
    """Rank 0's view of the whole table: runs done / claimed / waiting, and an ETA."""

    def __init__(self, plan: list[Path], claims: Claims, echo: Callable[[str], None]):
        self.plan, self.claims, self.echo = plan, claims, echo
        self.start = time.monotonic()
        self.first_done: int | None = None
        self.shown: tuple[float, int] = (-EVERY_SECONDS, -1)
        self.scanned = -SCAN

    def show(self, force: bool = False) -> None:
        """A line when a run completed since the last one, else at most every EVERY_SECONDS;
        the folders are looked at at most every SCAN seconds (a resumed table completes its
        done units in a burst), and once more at the end (`force`)."""
        now = time.monotonic()
        if not force and now - self.scanned < SCAN:
            return
        self.scanned = now
        states = [self.claims.state(f) for f in self.plan]
        done = states.count("done")
        if done == self.shown[1] and now - self.shown[0] < EVERY_SECONDS:
            return
        if self.first_done is None:
            self.first_done = done  # complete before this command: no part of the rate
        claimed, total = states.count("claimed"), len(self.plan)
        eta = ""
        if self.first_done < done < total:
            rate = (done - self.first_done) / (now - self.start)
            eta = f", ETA {duration((total - done) / rate)}"
        self.echo(
            f"table: {done}/{total} runs done, {claimed} claimed, "
            f"{total - done - claimed} waiting{eta}"
        )
        self.shown = (now, done)


@contextlib.contextmanager
def rank_resources(ranks: Ranks, device: str) -> Iterator[None]:
    """This rank's device (CUDA) and share of the cores, for the block; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cpu_share(ranks))
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    before = None  # asking CUDA for its current device would open a context on cuda:0
    if cuda:
        before = torch.cuda.current_device() if torch.cuda.is_initialized() else None
        torch.cuda.set_device(ranks.local_rank % torch.cuda.device_count())
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if before is not None:
            torch.cuda.set_device(before)


def stale_after() -> float:
    """Seconds a claim's heartbeat may stand still: DIFFATR_CLAIM_STALE_AFTER, or the default."""
    text = os.environ.get("DIFFATR_CLAIM_STALE_AFTER", "")
    try:
        seconds = float(text) if text.strip() else STALE_AFTER
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"DIFFATR_CLAIM_STALE_AFTER={text!r}: expected seconds > 0")
    return seconds


def cpu_share(ranks: Ranks) -> int:
    """Threads for one of the ranks on this machine: DIFFATR_THREADS=N if fixed (`threads.py`),
    else the usable cores // LOCAL_WORLD_SIZE (torchrun's OMP_NUM_THREADS=1 is its caution for
    unknown programs, not a share; at least one)."""
    fixed = os.environ.get("DIFFATR_THREADS", "").strip()
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(ranks.world)))
    return max(1, cores // max(1, local))


def _stacks(cfg: AblationConfig, device) -> bool:
    from ..diffusion_head.train import stacks_heads

    return stacks_heads(cfg.stack_heads, device)


def _call(fn, *args) -> Callable[[], object]:
    return lambda: fn(*args)


def _prefixed(echo: Callable[[str], None], ranks: Ranks) -> Callable[[str], None]:
    return lambda line: echo(f"[rank {ranks.rank}/{ranks.world}] {line}")

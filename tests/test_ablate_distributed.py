"""`torchrun -m diffatr.cli ablate` on CPU (2 gloo processes): the one-process table to the bit,
each run done once, and a table whose process was killed (SIGKILL) finished by running the same
command again. Also the claims (`experiments/claims.py`) and each rank's share of the cores."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from click.testing import CliRunner

from diffatr.cache import (
    BackboneSyntheticConfig,
    SyntheticConfig,
    make_synthetic,
    make_synthetic_backbone,
)
from diffatr.cli import main
from diffatr.experiments.claims import Claims
from diffatr.experiments.schedule import STARTS, cpu_share, rank_resources
from diffatr.experiments.store import DONE
from diffatr.extract.distributed import Ranks

FAST = ["--epochs", "1", "--batch-size", "8", "--steps-K", "6", "--topk", "5"]
FAST += ["--no-compile", "--device", "cpu", "--contrastive-epochs", "1"]


# -- claims -----------------------------------------------------------------------------------
class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _other_host(rank: int, clock=None, stale_after=60.0) -> Claims:
    claims = Claims(rank, stale_after, clock or Clock())
    claims.host = f"node{rank}"  # another machine: only its heartbeat says it is alive
    return claims


def test_one_claim_wins_a_race_and_a_released_run_can_be_claimed_again(tmp_path):
    run = tmp_path / "run"
    racers = [_other_host(r) for r in range(8)]
    won = [False] * len(racers)
    start = threading.Barrier(len(racers))

    def race(i):
        start.wait()
        won[i] = racers[i].take(run)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(won) == 1
    winner, loser = racers[won.index(True)], racers[won.index(False)]
    assert loser.state(run) == "claimed" and not loser.take(run)
    winner.release(run)  # not done: marked released, so the next claim is immediate
    assert loser.state(run) == "free" and loser.take(run)
    assert sorted(p.name for p in run.glob("claim.*")) == ["claim.2"]  # superseded: gone
    (run / DONE).write_text("{}")
    loser.release(run)  # done: no claim left behind
    assert list(run.glob("claim.*")) == [] and winner.state(run) == "done"


def test_a_dead_holders_claim_is_taken_over_a_live_one_is_not(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    here = Claims(1)
    (tmp_path / "a").mkdir()
    info = {"host": here.host, "pid": int(dead.stdout), "rank": 0, "beat": 3}
    (tmp_path / "a" / "claim.1").write_text(json.dumps(info))
    assert here.take(tmp_path / "a") and here.takeovers == 1  # same host, pid gone
    (tmp_path / "b").mkdir()
    info = {"host": here.host, "pid": os.getppid(), "rank": 0, "beat": 3}
    (tmp_path / "b" / "claim.1").write_text(json.dumps(info))
    assert not here.take(tmp_path / "b")  # same host, pid alive (and beating, for now)


def test_another_hosts_claim_is_stale_once_its_heartbeat_stands_still(tmp_path):
    clock = Clock()
    holder, waiter = _other_host(0), _other_host(1, clock, stale_after=10.0)
    run = tmp_path / "run"
    assert holder.take(run)
    assert not waiter.take(run)  # first seen at 0 s
    clock.now = 9.0
    assert not waiter.take(run)  # 9 s without a beat: still alive
    holder.beat()
    clock.now = 15.0
    assert not waiter.take(run)  # it moved: seen again at 15 s
    clock.now = 24.0
    assert not waiter.take(run)
    clock.now = 25.5
    assert waiter.take(run) and waiter.takeovers == 1
    assert not holder.take(run)  # the old holder, back, finds it taken: it must not work on


def test_each_rank_gets_its_share_of_the_cores_and_leaves_the_count_as_found(monkeypatch):
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.delenv("DIFFATR_THREADS", raising=False)
    assert cpu_share(Ranks(1, 4, 1)) == max(1, cores // 2)  # per machine, not per job
    monkeypatch.setenv("DIFFATR_THREADS", "3")
    assert cpu_share(Ranks(1, 4, 1)) == 3
    with rank_resources(Ranks(1, 4, 1), "cpu"):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


# -- torchrun ---------------------------------------------------------------------------------
def _joint(folder: Path) -> str:
    paths = []
    for split, n, s in (("train", 48, 1), ("val", 16, 2), ("test", 20, 3)):
        path = folder / f"syn_{split}.h5"
        make_synthetic(path, SyntheticConfig(n_clips=n, dim=16, n_classes=6, seed=s), split=split)
        paths.append(str(path))
    return "syn=" + ",".join(paths)


def _backbone(folder: Path) -> str:
    paths = []
    for split, n, s in (("train", 64, 1), ("val", 16, 2), ("test", 20, 3)):
        path = folder / f"bb_{split}.h5"
        cfg = BackboneSyntheticConfig(n_clips=n, audio_dim=24, text_dim=20, seed=s, map_seed=1)
        make_synthetic_backbone(path, cfg, dataset="bb", split=split)
        paths.append(str(path))
    return "bb=" + ",".join(paths)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    # one thread everywhere: the reference's count, so the numbers can agree to the bit
    return {**env, "OMP_NUM_THREADS": "1", "DIFFATR_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _torchrun(args: list[str], **kwargs) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "diffatr.cli", "ablate", *args]  # fmt: skip
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kwargs)  # fmt: skip


def _reference(args: list[str], monkeypatch) -> None:
    """The same table in this process, one thread, no torchrun."""
    monkeypatch.setenv("DIFFATR_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(main, ["ablate", *args])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output


def _records(out: Path, table: str) -> list[dict]:
    records = json.loads((out / table / "results.json").read_text())["records"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "runs").iterdir() if p.is_dir())


def test_two_processes_make_the_one_process_table_each_run_once(tmp_path, monkeypatch):
    """(a) every record equal to the one-process one, exactly; (b) one done.json and one start
    per run. Stacked (--stack): a row's seeds train together, as in one process."""
    data = _joint(tmp_path)
    args = ["strategy", "--data", data, "--seeds", "0,1,2", "--stack", *FAST]
    _reference([*args, "--out", str(tmp_path / "one")], monkeypatch)
    run = _torchrun([*args, "--out", str(tmp_path / "two")])
    output = run.communicate(timeout=400)[0]
    assert run.returncode == 0, output
    assert _records(tmp_path / "two", "strategy") == _records(tmp_path / "one", "strategy")
    table = (tmp_path / "one" / "strategy" / "table.txt").read_text()
    assert (tmp_path / "two" / "strategy" / "table.txt").read_text() == table
    runs = _runs(tmp_path / "two")
    assert len(runs) == len(_runs(tmp_path / "one")) == 3 + 2 * 3 + 1 + 3  # heads, evals, ...
    for folder in runs:
        assert [p.name for p in folder.glob("done*")] == [DONE], folder
        starts = (folder / STARTS).read_text().splitlines()
        assert len(starts) == 1, (folder, starts)  # started once: trained once
        assert not list(folder.glob("claim.*"))
    heads = [f for f in runs if f.name.startswith("head-")]
    assert {(f / STARTS).read_text() for f in heads} == {(heads[0] / STARTS).read_text()}
    assert "as one stacked computation" in output  # the three heads: one unit, one rank
    total = len(runs)
    assert f"[rank 0/2] table: {total}/{total} runs done, 0 claimed, 0 waiting" in output
    assert "[rank 1/2] " in output and "run(s) done here" in output


def test_a_table_killed_mid_way_is_finished_by_the_same_command(tmp_path, monkeypatch):
    """(c) SIGKILL to one process mid-table (torchrun stops the other); the same command again
    takes the dead claims over, redoes nothing that completed, and ends with the one-process
    numbers. Backbone data: phase 1 and the projections come first, per seed."""
    data = _backbone(tmp_path)
    args = ["strategy", "--data", data, "--seeds", "0,1", "--no-baselines", *FAST]
    out = tmp_path / "two"
    run = _torchrun([*args, "--out", str(out)])
    killed, done_before = None, {}
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        done = {p.parent: p.read_bytes() for p in out.glob(f"runs/*/{DONE}")}
        for claim in out.glob("runs/[hp][eh]*/claim.*"):  # a head or phase 1: the long runs
            try:
                info = json.loads(claim.read_text())
            except (OSError, ValueError):
                continue
            if done and not info.get("released") and info["pid"] != run.pid:
                done_before = done
                os.kill(info["pid"], signal.SIGKILL)
                killed = claim.parent
                break
        time.sleep(0.01)
    output = run.communicate(timeout=120)[0]
    assert killed is not None, "no claim to kill seen: " + output
    assert run.returncode != 0, output
    cut = [f for f in _runs(out) if (f / STARTS).exists() and not (f / DONE).exists()]
    assert cut  # started, never finished: the killed run (and the other rank's, stopped)

    again = _torchrun([*args, "--out", str(out)])
    output = again.communicate(timeout=400)[0]
    assert again.returncode == 0, output
    _reference([*args, "--out", str(tmp_path / "one")], monkeypatch)
    assert _records(out, "strategy") == _records(tmp_path / "one", "strategy")
    for folder, record in done_before.items():  # nothing completed was redone
        assert (folder / DONE).read_bytes() == record
        assert len((folder / STARTS).read_text().splitlines()) == 1
    for folder in cut:
        assert len((folder / STARTS).read_text().splitlines()) == 2  # started, cut, redone
    runs = _runs(out)
    assert len(runs) == len(_runs(tmp_path / "one")) == 2 + 2 * 3 + 2 + 2 * 3
    for folder in runs:
        assert [p.name for p in folder.glob("done*")] == [DONE]
        assert 1 <= len((folder / STARTS).read_text().splitlines()) <= 2

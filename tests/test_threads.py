"""The thread policy of training (diffatr/threads.py): the cores other processes used, from
/proc/stat minus this process's own CPU time, set torch's thread count; the entry count comes
back afterwards; DIFFATR_THREADS=off / N. The machine's load is simulated (no timing here)."""

import pytest
import torch

from diffatr import threads


class FakeMachine:
    """Elapsed seconds, all processes' CPU seconds and ours, advanced by `run`."""

    def __init__(self):
        self.now, self.total, self.own = 100.0, 5000.0, 10.0

    def run(self, seconds: float, ours: float, others: float) -> None:
        self.now += seconds
        self.own += ours * seconds
        self.total += (ours + others) * seconds


@pytest.fixture
def machine(monkeypatch):
    m = FakeMachine()
    monkeypatch.setattr(threads.time, "monotonic", lambda: m.now)
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: m.total)
    monkeypatch.setattr(threads, "_own_seconds", lambda: m.own)
    before = torch.get_num_threads()
    yield m
    torch.set_num_threads(before)


def test_other_processes_cores_are_measured_and_given_up(machine, monkeypatch) -> None:
    torch.set_num_threads(2)
    policy = threads.AdaptiveThreads(max_threads=2, cores=2)
    machine.run(0.1, ours=2.0, others=0.0)
    assert policy.others() is None  # too soon to tell
    machine.run(1.0, ours=2.0, others=0.1)  # an idle machine's background
    assert policy.others() == pytest.approx(0.1 / 1.1)  # since the last look, 1.1 s ago
    machine.run(1.0, ours=2.0, others=0.1)
    policy.tick()
    assert torch.get_num_threads() == 2
    machine.run(1.0, ours=0.7, others=1.3)  # a two-thread competitor
    policy.tick()
    assert torch.get_num_threads() == 1
    machine.run(1.0, ours=1.0, others=1.0)
    policy.tick()
    assert torch.get_num_threads() == 1
    machine.run(1.0, ours=1.0, others=0.05)  # it ended
    policy.tick()
    assert torch.get_num_threads() == 2 and policy.changes == 2


def test_a_busy_machine_starts_with_one_thread(machine, monkeypatch) -> None:
    torch.set_num_threads(2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.4, 1.0, 0.5))
    with threads.training_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_a_bigger_machine_keeps_the_cores_left(machine) -> None:
    torch.set_num_threads(2)
    policy = threads.AdaptiveThreads(max_threads=8, cores=16)
    machine.run(1.0, ours=8.0, others=9.5)  # others hold 10 cores: 6 left, capped at 8
    policy.tick()
    assert torch.get_num_threads() == 6


def test_training_threads_restores_the_count_and_obeys_the_environment(machine, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # idle on entry
    with threads.training_threads():
        assert torch.get_num_threads() == 2
        machine.run(1.0, ours=1.0, others=1.5)
        threads.tick()
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2 and not threads._active
    monkeypatch.setenv("DIFFATR_THREADS", "off")
    with threads.training_threads():
        machine.run(1.0, ours=1.0, others=1.5)
        threads.tick()
        assert torch.get_num_threads() == 2
    monkeypatch.setenv("DIFFATR_THREADS", "1")
    with threads.training_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)  # one thread on entry (the tests' setting): never more
    monkeypatch.setenv("DIFFATR_THREADS", "adaptive")
    with threads.training_threads():
        machine.run(1.0, ours=1.0, others=0.0)
        threads.tick()
        assert torch.get_num_threads() == 1

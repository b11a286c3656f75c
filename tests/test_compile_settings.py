"""compiling.compile_settings: inductor takes the CPU's flags' word for its kernels' vector ISA
inside loops of compiled calls (its build-and-load proof cost 5 s of a first `evaluate --head`);
the pick is the proven one, re-ranking's kernels serve any thread count, the settings are put
back, a loop without compiled code imports no
compiler, and the user's own TORCHINDUCTOR_VEC_ISA_OK rules. threads.restart: the policy's next
look at the machine starts after a compile (its C++ compiler's child processes are ours)."""

import subprocess
import sys

import pytest
import torch

from diffatr import compiling, threads


def test_a_loop_without_compiled_code_imports_no_compiler() -> None:
    code = (
        "import sys, torch\n"
        "from diffatr.compiling import compile_settings\n"
        "with compile_settings(False, ranking=True):\n"
        "    pass\n"
        "print('torch._inductor' in sys.modules, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not compiling._trusts_cpu_flags(), reason="not x86-64 Linux with AVX2+")
def test_the_trusted_pick_is_the_proven_pick_and_the_setting_is_put_back() -> None:
    from torch._inductor import config, cpu_vec_isa

    assert config.cpp.vec_isa_ok is None
    proven = cpu_vec_isa.valid_vec_isa_list.__wrapped__()  # compiles and loads each ISA's test
    with compiling.compile_settings(True):
        assert config.cpp.vec_isa_ok is True
        trusted = cpu_vec_isa.valid_vec_isa_list.__wrapped__()  # the flags alone
    assert config.cpp.vec_isa_ok is None
    assert [str(isa) for isa in trusted] == [str(isa) for isa in proven]
    assert proven, "this CPU has AVX2 or AVX-512: inductor should vectorise"


def test_re_ranking_kernels_serve_any_thread_count() -> None:
    from torch._inductor import config

    assert config.cpp.dynamic_threads is False
    with compiling.compile_settings(True, ranking=True):
        assert config.cpp.dynamic_threads is True
    with compiling.compile_settings(True):  # training: the policy pins its kernels' count
        assert config.cpp.dynamic_threads is False
    assert config.cpp.dynamic_threads is False


def test_the_users_setting_rules(monkeypatch) -> None:
    from torch._inductor import config

    monkeypatch.setattr(compiling, "_trusts_cpu_flags", lambda: True)
    with config.patch({"cpp.vec_isa_ok": False}):  # TORCHINDUCTOR_VEC_ISA_OK=0
        with compiling.compile_settings(True):
            assert config.cpp.vec_isa_ok is False
        assert config.cpp.vec_isa_ok is False


def test_other_machines_keep_inductors_proof(monkeypatch) -> None:
    from torch._inductor import config

    monkeypatch.setattr(compiling.platform, "machine", lambda: "aarch64")
    with compiling.compile_settings(True):
        assert config.cpp.vec_isa_ok is None
    monkeypatch.setattr(compiling.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    with compiling.compile_settings(True):
        assert config.cpp.vec_isa_ok is None


def test_after_a_compile_the_policy_measures_afresh(monkeypatch) -> None:
    clock = {"now": 100.0, "total": 5000.0, "own": 10.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: clock["total"])
    monkeypatch.setattr(threads, "_own_seconds", lambda: clock["own"])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        policy = threads.AdaptiveThreads(max_threads=2, cores=2, pin=False)
        threads._active.append(policy)
        # 6 s compiling: our 1 core, and the compiler's children (other processes to /proc/stat)
        clock["now"] += 6.0
        clock["own"] += 6.0
        clock["total"] += 12.0
        threads.restart()  # first_call does this after the compile
        clock["now"] += 1.0  # then a quiet block on our 2 threads
        clock["own"] += 2.0
        clock["total"] += 2.0
        policy.tick()
        assert torch.get_num_threads() == 2 and policy.changes == 0
    finally:
        threads._active.clear()
        torch.set_num_threads(before)


def test_first_call_restarts_the_policys_measurement(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(threads, "restart", lambda: calls.append("restart"))
    monkeypatch.setattr(compiling, "_CALLED", set())
    assert compiling.first_call("k", "a test's code", lambda x: x + 1, 1) == 2
    assert calls == ["restart"]
    compiling.first_call("k", "a test's code", lambda x: x + 1, 1)  # not a first call
    assert calls == ["restart"]

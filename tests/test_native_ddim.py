"""The C loop of native_ddim.py (`ddim_rows.c`) against `ddim_sample` over the reference
`Denoiser.forward` and against the torch steps of fused.py; the same bytes for any thread
count; its build (diffatr/native.py): cached per source, a failed build warned once and the
torch code used; and a re-ranking command that runs it imports no torch.compile machinery."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from diffatr import native
from diffatr.diffusion_head import Denoiser, GalleryDenoiser, cosine_betas, ddim_sample, native_ddim

ROOT = Path(__file__).resolve().parent.parent


def setup(seed: int, D: int = 24, Ng: int = 40, B: int = 5, N: int = 7):
    torch.manual_seed(seed)
    m = Denoiser(dim=D)
    for p in m.parameters():  # biases too, so every term of the algebra matters
        torch.nn.init.normal_(p, std=0.1)  # 0.3 at D = 24 clamps every x0_hat at 1
    g = torch.Generator().manual_seed(seed + 1)
    gallery = torch.randn(Ng, D, generator=g)
    query = torch.randn(B, D, generator=g)
    idx = torch.stack([torch.randperm(Ng, generator=g)[:N] for _ in range(B)])
    return m, gallery, query, idx, g


def torch_steps(monkeypatch) -> None:
    """fused.py's torch steps (compiled or eager), not a native loop."""
    monkeypatch.setattr(native_ddim, "backend", lambda compiled, *tensors: None)


@pytest.mark.parametrize("loop", ["c", "numba"])
@pytest.mark.parametrize(("steps", "eta"), [(None, 0.0), (4, 0.0), (4, 0.8)])
def test_native_sample_equals_ddim_over_the_reference_denoiser(
    loop, steps, eta, monkeypatch
) -> None:
    """The C loop (compiled code allowed) and the numba loop (`--no-compile`) against DDIM
    over the reference denoiser, and against fused.py's eager torch steps."""
    K = 10
    m, gallery, query, idx, g = setup(5)
    x_T = torch.randn(len(query), idx.shape[1], generator=g)
    noise = torch.randn(K if steps is None else steps, *x_T.shape, generator=g)
    betas = cosine_betas(K)
    gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=loop == "c")
    assert gd.native(x_T) == loop  # float32 on the CPU (with a C compiler: the C loop)
    with torch.no_grad():
        got = gd.sample(query, idx, x_T, betas, steps, eta, noise)
        want = ddim_sample(
            lambda x, k: m(x, k, query, gallery[idx]), x_T, betas, steps, eta, noise=noise
        )
        other = gd.sample(query, idx, x_T, betas, steps, eta, noise.flip(0))
        torch_steps(monkeypatch)
        eager = GalleryDenoiser(m, gallery, K, compiled=False).sample(
            query, idx, x_T, betas, steps, eta, noise
        )
    assert (want.abs() < 0.99).float().mean() > 0.5  # not a clamped, trivial answer
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=2e-6)
    if eta > 0:  # the noise is used: other noise, another result
        assert not torch.allclose(other, got)


@pytest.mark.parametrize("compiled", [True, False])
def test_native_rows_are_the_same_bytes_for_any_thread_count(compiled) -> None:
    K = 10
    m, gallery, query, idx, g = setup(9, D=64, Ng=100, B=37, N=16)
    x_T = torch.randn(len(query), idx.shape[1], generator=g)
    gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=compiled)
    assert gd.native(x_T) == ("c" if compiled else "numba")
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(gd.sample(query, idx, x_T, cosine_betas(K)))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize(("D", "N", "eta"), [(20, 7, 0.8), (32, 16, 0.0)])
def test_the_numba_loop_is_the_c_loop_byte_for_byte(D, N, eta) -> None:
    """ddim_rows_numba.py sums across candidates (to vectorise) in the C loop's LANES partial
    sums and order: the same bytes, at widths 2D that are (64) and are not (40) multiples of
    LANES, with and without noise."""
    if native_ddim.library() is None:
        pytest.skip("no C compiler builds the C loop here")
    K = 10
    m, gallery, query, idx, g = setup(11, D=D, Ng=60, B=9, N=N)
    x_T = torch.randn(len(query), N, generator=g)
    noise = torch.randn(4, *x_T.shape, generator=g)
    outs = {}
    for loop in ("c", "numba"):
        gd = GalleryDenoiser(m, gallery, n_steps=K, compiled=loop == "c")
        assert gd.native(x_T) == loop
        with torch.no_grad():
            outs[loop] = gd.sample(query, idx, x_T, cosine_betas(K), 4, eta, noise)
    assert (outs["c"].abs() < 0.99).float().mean() > 0.5  # not a clamped, trivial answer
    assert torch.equal(outs["c"], outs["numba"])


def test_a_changed_source_builds_again_and_the_same_loads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_LOADED", {})
    source = tmp_path / "k.c"
    source.write_text("int answer(void) { return 41; }\n")
    assert native.load(source, "a test kernel").answer() == 41
    built = sorted((tmp_path / "cache" / "diffatr-native").glob("*.so"))
    assert len(built) == 1
    monkeypatch.setattr(native, "_LOADED", {})  # as a new process
    mtime = built[0].stat().st_mtime_ns
    assert native.load(source, "a test kernel").answer() == 41
    assert built[0].stat().st_mtime_ns == mtime  # loaded, not built again
    source.write_text("int answer(void) { return 42; }\n")
    monkeypatch.setattr(native, "_LOADED", {})
    assert native.load(source, "a test kernel").answer() == 42
    assert len(list((tmp_path / "cache" / "diffatr-native").glob("*.so"))) == 2


def test_a_changed_header_builds_again(tmp_path, monkeypatch) -> None:
    """A header the source includes from its folder is part of the library's key."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_LOADED", {})
    source, header = tmp_path / "k.c", tmp_path / "k.h"
    header.write_text("#define ANSWER 41\n")
    source.write_text('#include "k.h"\nint answer(void) { return ANSWER; }\n')
    assert native.load(source, "a test kernel").answer() == 41
    header.write_text("#define ANSWER 42\n")
    monkeypatch.setattr(native, "_LOADED", {})  # as a new process
    assert native.load(source, "a test kernel").answer() == 42
    assert len(list((tmp_path / "cache" / "diffatr-native").glob("*.so"))) == 2


def test_a_build_without_openmp_is_kept_and_not_retried(tmp_path, monkeypatch) -> None:
    """A source the OpenMP build fails on (here by #error; on a machine: no OpenMP library)
    loads its build without OpenMP, silently; a later process loads that one and tries no
    build at all (no failing build and its note in every process)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_LOADED", {})
    source = tmp_path / "serial.c"
    source.write_text("#ifdef _OPENMP\n#error no\n#endif\nint answer(void) { return 7; }\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.load(source, "a test kernel", openmp=True).answer() == 7
    builds = []
    real = native._build
    monkeypatch.setattr(native, "_build", lambda *a: builds.append(a) or real(*a))
    monkeypatch.setattr(native, "_LOADED", {})  # as a new process
    assert native.load(source, "a test kernel", openmp=True).answer() == 7
    assert builds == []


@pytest.mark.parametrize(
    "text",
    ["this is not C\n", '#include "gone.h"\nint answer(void) { return ANSWER; }\n'],
    ids=["not C", "a missing header"],  # the header: an install that left it out, not a crash
)
def test_a_failed_build_warns_and_the_torch_steps_run(text, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_LOADED", {})
    source = tmp_path / "bad.c"
    source.write_text(text)
    with pytest.warns(UserWarning, match="could not build a test kernel from bad.c"):
        assert native.load(source, "a test kernel") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        assert native.load(source, "a test kernel") is None
    assert not list((tmp_path / "cache").rglob("*.so"))  # no partial library left


def test_without_a_c_compiler_the_numba_loop_runs_silently(monkeypatch) -> None:
    """No compiler is no failure of the kernel: the numba loop runs (it needs none)."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", "")  # no cc, gcc or clang to find
    monkeypatch.setattr(native, "_LOADED", {})
    m, gallery, query, idx, g = setup(2)
    x_T = torch.randn(len(query), idx.shape[1], generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert GalleryDenoiser(m, gallery, n_steps=6, compiled=True).native(x_T) == "numba"


def test_re_ranking_with_the_c_loop_imports_no_compiler(tmp_path) -> None:
    """The point of the C loop: a process that re-ranks a top-k loads it without importing
    torch._dynamo or torch._inductor (~4-5 s per process, docs/speed.md)."""
    code = textwrap.dedent(
        """
        import sys, torch
        sys.path.insert(0, 'tests')
        from rerank_oracle import random_head
        from diffatr.diffusion_head import DiffusionScores, RerankConfig
        g = torch.Generator().manual_seed(0)
        text, audio = torch.randn(50, 32, generator=g), torch.randn(20, 32, generator=g)
        s = DiffusionScores(text, audio, random_head(32, K=5), RerankConfig(topk=4))
        assert not s.compiles()
        s.t2a(0, s.n_text), s.a2t(0, s.n_audio)
        loaded = [m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules]
        assert not loaded, loaded
        """
    )
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert list((tmp_path / "diffatr-native").glob("ddim_rows-*.so"))


def test_the_kernel_applies_to_float32_cpu_only() -> None:
    x = torch.zeros(2, 3)
    assert native_ddim.usable(x) and native_ddim.backend(True, x) == "c"
    assert not native_ddim.usable(x.double()) and native_ddim.backend(True, x.double()) is None


def test_a_cache_folder_anyone_can_write_is_not_loaded_from(tmp_path, monkeypatch) -> None:
    """A library in a folder every user may write could be anyone's code: refused, warned."""
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    monkeypatch.setattr(native, "_LOADED", {})
    source = tmp_path / "k.c"
    source.write_text("int answer(void) { return 41; }\n")
    with pytest.warns(UserWarning, match="not yours alone"):
        assert native.load(source, "a test kernel") is None
    assert not list(cache.rglob("*.so"))


def test_a_cc_that_names_no_program_is_said(monkeypatch) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setattr(native, "_LOADED", {})
    with pytest.warns(UserWarning, match="CC=no-such-compiler-here names no program on PATH"):
        assert native.load(native_ddim.SOURCE, "the test's kernel") is None

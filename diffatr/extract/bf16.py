"""Whether this CPU computes bfloat16 natively, and the warning `--precision bf16` gives when not.

Reads /proc/cpuinfo (Linux). Writes one warning line on stderr, at most once per process.

bf16 autocast on a CPU without bf16 instructions (x86 `avx512_bf16` / `amx_bf16`, Arm `bf16`)
still runs, but emulated: issue 20 reports a joint Cnn14 extraction at 1.02 clips/s in bf16
against 2.38 in fp32 on such a CPU, and bench/bench_bf16_cpu.py measures the ratio on the
machine at hand. Nothing failed, so the user never learned what the option cost them; this
says so before the work.
Where the flags cannot be read (macOS, Windows) nothing is claimed and nothing is printed.
"""

from ..progress import warn

NATIVE_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86, x86 (AMX), Arm (FEAT_BF16)
_warned: set[str] = set()  # one warning a process, however many encoders check


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (x86 `flags`, Arm `Features`), None when they cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    flags: set[str] = set()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags or None


def native_bf16() -> bool | None:
    """True / False from the CPU's flags; None when unknown."""
    flags = cpu_flags()
    return None if flags is None else bool(flags & NATIVE_FLAGS)


def warn_if_emulated(precision: str, device_type: str) -> bool:
    """Warn (once) that bf16 on this CPU is emulated and usually slower than fp32; True if so."""
    if precision != "bf16" or device_type != "cpu" or native_bf16() is not False:
        return False
    if "cpu" not in _warned:
        _warned.add("cpu")
        warn(
            "--precision bf16: this CPU has no bfloat16 instructions (no avx512_bf16, amx_bf16 "
            "or bf16 flag in /proc/cpuinfo), so bf16 is emulated and usually slower than fp32; "
            "use --precision fp32 here"
        )
    return True

"""Why `torch.load` could not read a file, in words a user can act on.

torch's own errors on a file that is not a checkpoint are the unpickler's: a text file starting
`he...` gives `KeyError: 101` (the byte `h` is read as the pickle instruction "fetch memo entry
<next byte>", and `e` is byte 101), others `invalid load key, '<'` or `pop from empty list`.
`load_failure` says instead what the file is: a `torch.save` file starts with a zip header
(`PK\\x03\\x04`, PyTorch >= 1.6) or a pickle protocol mark (byte 0x80, older saves); a file that
starts otherwise is not one, and its first bytes are shown as printable text. Reads the first
bytes of the file; writes nothing.
"""

from pathlib import Path

_ZIP = b"PK\x03\x04"
_PICKLE = b"\x80"
_SHOWN = 24  # first bytes shown


def first_bytes(data: bytes) -> str:
    """Printable text of some bytes: text as text, anything else as `\\xNN` (never raw)."""
    return repr(data)[2:-1]


def looks_like_text(data: bytes) -> bool:
    """UTF-8 of printable characters and line breaks (a cut last character allowed)."""
    sample = data.decode("utf-8", errors="ignore")
    if len(sample.encode("utf-8")) < len(data) - 3:  # more than a cut last character dropped
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in sample)


def load_failure(path: str | Path, exc: BaseException) -> str:
    """What to put in parentheses after "not a PyTorch checkpoint"."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SHOWN)
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    text = str(exc).strip()
    said = text.splitlines()[0][:160] if text else ""
    torch_says = f"torch.load: {type(exc).__name__}" + (f": {said}" if said else "")
    if not head:
        return "the file is empty"
    if head.startswith(_ZIP):
        return f"a zip archive, but not one torch.save wrote whole ({torch_says})"
    if head.startswith(_PICKLE):
        return f"a pickle that torch cannot read ({torch_says}); truncated or not a checkpoint"
    looks = "text" if looks_like_text(head) else "binary data"
    return (
        f"it starts with b'{first_bytes(head)}' ({looks}), not the zip header or pickle mark "
        f"a torch.save file starts with; {torch_says}"
    )

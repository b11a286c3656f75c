"""The code blocks of README.md and docs/*.md, and the convention that says which ones run.

```python   run, in page order, in one namespace per page, in a fresh folder
```bash     parsed (`bash -n`); every `diffatr ...` command in it checked against the click
            commands: the subcommands and every --option must exist
```text     shown only (output, transcripts); `$ diffatr ...` lines checked like bash's
<!-- run -->       on the line before a ```bash block: also run it (bash -e), in the page's
                   folder, between its python blocks
<!-- not run -->   on the line before a ```python block: compiled, not run (it needs data
                   or models the test machine lacks); say why after a colon
"""

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click

FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^\n]*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str  # "run", "not run" or ""

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of a markdown page, in order (fences inside lists included)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        before = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        marker = ""
        if before.startswith("<!--") and before.endswith("-->"):
            marker = before[4:-3].strip().split(":")[0].strip()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        out.append(Block(page, i + 1, m["lang"].lower(), "\n".join(body) + "\n", marker))
        i = j + 1
    return out


def diffatr_commands(block: Block) -> list[list[str]]:
    """The `diffatr ...` command lines of a block, as argument lists after `diffatr`."""
    text = block.code.replace("\\\n", " ")
    commands = []
    for raw in text.splitlines():
        line = raw.strip()
        if block.lang == "text":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        line = line.split(" #", 1)[0]
        for part in re.split(r"&&|\|\||;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]  # VAR=value before the command
            if words[:1] == ["diffatr"]:
                commands.append(words[1:])
            elif "diffatr.cli" in words:  # torchrun ... -m diffatr.cli CMD
                commands.append(words[words.index("diffatr.cli") + 1 :])
    return commands


def check_command(args: list[str], main: click.Group) -> str | None:
    """None when `diffatr ARGS` names existing commands and options, else what is wrong."""
    command, path = main, ["diffatr"]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.commands.get(args[0])
        if sub is None:
            return f"`{' '.join(path)}` has no command {args[0]!r}"
        command, path, args = sub, [*path, args[0]], args[1:]
    known = {"--help", "-h"}
    for param in command.params:
        known.update(getattr(param, "opts", []))
        known.update(getattr(param, "secondary_opts", []))
    if isinstance(command, click.Group) and path == ["diffatr"]:
        known.add("--version")
    for word in args:
        if word.startswith("-") and not re.fullmatch(r"-\d.*", word):
            name = word.split("=", 1)[0]
            if name not in known:
                return f"`{' '.join(path)}` has no option {name}"
    return None

"""Every code example in README.md and docs/ works (the convention is in docs_blocks.py):
python blocks run, `<!-- run -->` bash blocks run, every bash block parses, and every
`diffatr ...` line names commands and options that exist."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import blocks, check_command, diffatr_commands

from diffatr.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGS = {"python", "bash", "text", "", "console", "json", "csv", "yaml", "toml", "sh"}


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_commands_and_options_exist(page) -> None:
    problems = []
    for block in blocks(page):
        assert block.lang in LANGS, f"{block.where}: fence language {block.lang!r}"
        if block.lang in ("bash", "sh", "text", "console"):
            for args in diffatr_commands(block):
                problem = check_command(args, main)
                if problem:
                    problems.append(f"{block.where}: {problem}")
        if block.lang in ("bash", "sh"):
            parsed = subprocess.run(
                ["bash", "-n"], input=block.code, text=True, capture_output=True
            )
            if parsed.returncode:
                problems.append(f"{block.where}: bash cannot parse it: {parsed.stderr.strip()}")
        if block.lang == "python":
            compile(block.code, block.where, "exec")
    assert not problems, "\n".join(problems)


def _runnable(page: Path) -> bool:
    return any(
        (b.lang == "python" and b.marker != "not run") or (b.lang == "bash" and b.marker == "run")
        for b in blocks(page)
    )


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=_id)
def test_examples_run(page, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    namespace = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.lang == "python" and block.marker != "not run":
            exec(compile(block.code, block.where, "exec"), namespace)
        elif block.lang == "bash" and block.marker == "run":
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.code],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}"


def test_the_convention_finds_what_it_should(tmp_path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "text\n\n<!-- run -->\n```bash\ndiffatr evaluate a.h5 --topk 5 \\\n  --no-such\n```\n"
        "- item\n\n  ```python\n  x = 1\n  ```\n\n<!-- not run: needs data -->\n```python\n"
        "y\n```\n\n```text\n$ diffatr cache nope x.h5\nwrote x\n```\n",
        encoding="utf-8",
    )
    found = blocks(page)
    assert [(b.lang, b.marker, b.line) for b in found] == [
        ("bash", "run", 4),
        ("python", "", 10),
        ("python", "not run", 15),
        ("text", "", 19),
    ]
    assert found[1].code == "x = 1\n"
    problems = [check_command(a, main) for b in found for a in diffatr_commands(b)]
    assert problems == [
        "`diffatr evaluate` has no option --no-such",
        "`diffatr cache` has no command 'nope'",
    ]

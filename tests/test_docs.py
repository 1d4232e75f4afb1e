"""The docs' code blocks run: every fenced block in README.md and docs/*.md that is marked
``<!-- test: run -->`` or ``<!-- test: output -->`` is executed here, so a snippet that stops
working fails the build. The convention is described in docs/contributing-docs.md.

- ``python`` blocks run as a script; ``bash`` blocks run with ``set -euo pipefail``; ``console``
  blocks run their ``$ `` lines (a trailing ``\\`` continues a command) with ``set -eo pipefail``.
- ``run``: the block must succeed; in a ``console`` block every sha256 digest it shows must
  also be printed (a digest in the docs is one a reader can reproduce).
- ``output``: a ``console`` block's output must be exactly what it shows (``...`` on a line of
  its own stands for any lines, ``…`` inside a line for any text).
- Words after the mode name fixtures: ``platform`` (a real platform on a loopback port, in
  ``$SERVELAB_PLATFORM``), ``mobilenetv2`` (MobileNetV2 built from code into
  ``models/mobilenetv2.onnx`` and pushed to the platform's store as ``mobilenetv2``, as the
  README's tour does), ``repo`` (run in the repository's root instead, for blocks that run a
  file the repository ships), ``needs=MODULE[,MODULE]`` (skip when a package is not installed).

The blocks of one file share one working directory and run in order, like a reader would.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from platform_harness import RunningPlatform

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKED = re.compile(r"^<!--\s*test:\s*(?P<mode>run|output)(?P<opts>[^>]*?)\s*-->\s*\n\s*"
                    r"```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.S | re.M)
DIGEST = re.compile(r"\b[0-9a-f]{64}\b")
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    mode: str
    lang: str
    body: str
    options: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def collect(paths: list[Path] = DOCS) -> list[Block]:
    blocks = []
    for doc in paths:
        text = doc.read_text()
        for m in MARKED.finditer(text):
            line = text.count("\n", 0, m.start("body")) + 1
            blocks.append(Block(doc, line, m["mode"], m["lang"], m["body"], tuple(m["opts"].split())))
    return blocks


def console_commands(body: str) -> tuple[list[str], list[str]]:
    """(commands, shown output lines) of a ``console`` block."""
    commands: list[str] = []
    shown: list[str] = []
    continuing = False
    for line in body.splitlines():
        if continuing:
            commands[-1] += "\n" + line
            continuing = line.endswith("\\")
        elif line.startswith("$ "):
            commands.append(line[2:])
            continuing = line.endswith("\\")
        else:
            shown.append(line)
    return commands, shown


def output_matches(shown: list[str], actual: list[str]) -> bool:
    """Does ``actual`` match ``shown``, where ``...`` lines match any lines and ``…`` any text?"""
    pattern = ""
    for line in shown:
        if line.strip() == "...":
            pattern += r"(?:.*\n)*?"
        else:
            pattern += ".*?".join(re.escape(part) for part in line.rstrip().split("…")) + r"[ \t]*\n"
    return re.fullmatch(pattern, "".join(line.rstrip() + "\n" for line in actual)) is not None


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def doc_platform(tmp_path_factory: pytest.TempPathFactory):
    with RunningPlatform(tmp_path_factory.mktemp("doc-platform") / "home") as p:
        yield p


@pytest.fixture(scope="session")
def doc_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    return {doc: tmp_path_factory.mktemp(doc.stem) for doc in DOCS}


def _env(workdir: Path, home: Path, platform_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVELAB_", "AWS_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(ROOT / "src"), SERVELAB_HOME=str(home), COLUMNS="80", HOME=str(workdir))
    if platform_url:
        env["SERVELAB_PLATFORM"] = platform_url
    return env


def _mobilenetv2(cwd: Path, env: dict[str, str]) -> None:
    if (cwd / "models" / "mobilenetv2.onnx").is_file():
        return
    for cmd in (["servelab", "models", "build", "mobilenetv2", "--out", "models"],
                ["servelab", "models", "push", "models/mobilenetv2.onnx", "--name", "mobilenetv2"]):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        assert proc.returncode == 0, proc.stdout + proc.stderr


BLOCKS = collect()


def test_the_docs_mark_the_blocks_the_readme_promises() -> None:
    ids = {b.id.split(":")[0] for b in BLOCKS}
    assert {"README.md", "docs/platform.md", "docs/store.md", "docs/cost.md"} <= ids, ids


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block(block: Block, doc_dirs: dict[Path, Path], request: pytest.FixtureRequest) -> None:
    for opt in block.options:
        if opt.startswith("needs="):
            for module in opt.removeprefix("needs=").split(","):
                if importlib.util.find_spec(module) is None:
                    pytest.skip(f"needs {module}")
    workdir = doc_dirs[block.doc]
    cwd = ROOT if "repo" in block.options else workdir
    uses_platform = "platform" in block.options or "mobilenetv2" in block.options
    platform = request.getfixturevalue("doc_platform") if uses_platform else None
    env = _env(workdir, platform.home if platform else workdir / "servelab-home",
               platform.url if platform else None)
    if "mobilenetv2" in block.options:
        _mobilenetv2(cwd, env)

    if block.lang == "python":
        script = cwd / f"block_{block.line}.py"
        script.write_text(block.body)
        argv = [sys.executable, str(script)]
        shown: list[str] = []
    elif block.lang == "bash":
        argv = ["bash", "-c", "set -euo pipefail\n" + block.body]
        shown = []
    elif block.lang == "console":
        commands, shown = console_commands(block.body)
        argv = ["bash", "-c", "set -eo pipefail\n" + "\n".join(commands)]
    else:
        pytest.fail(f"{block.id}: cannot run a ```{block.lang} block; mark only python, bash or console")
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    said = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, f"{block.id} exited {proc.returncode}\n{said}"
    if block.lang == "console":
        missing = sorted(set(DIGEST.findall("\n".join(shown))) - set(DIGEST.findall(proc.stdout + proc.stderr)))
        assert not missing, f"{block.id} shows digests this build does not print: {missing}\n{said}"
    if block.mode == "output":
        assert output_matches(shown, proc.stdout.splitlines()), f"{block.id}: output differs\n{said}"


def test_output_matching_rules() -> None:
    assert output_matches(["a 1", "...", "z"], ["a 1", "b", "c", "z"])
    assert output_matches(["REPORT …  Duration: …"], ["REPORT 1234  Duration: 5 ms"])
    assert not output_matches(["a 1"], ["a 2"])
    assert console_commands("$ echo a \\\n  b\na b\n") == (["echo a \\\n  b"], ["a b"])


def regenerate(doc: Path) -> int:
    """Rewrite the shown output of ``doc``'s fixture-free ``output`` blocks with what they print now."""
    text = doc.read_text()
    changed = 0
    for block in reversed([b for b in collect([doc]) if b.mode == "output" and b.lang == "console"
                           and set(b.options) <= {"repo"}]):
        commands, _ = console_commands(block.body)
        workdir = ROOT / ".doc-run" / doc.stem
        workdir.mkdir(parents=True, exist_ok=True)
        out = []
        for command in commands:  # one by one, so each command's output follows it
            proc = subprocess.run(["bash", "-c", "set -eo pipefail\n" + command],
                                  cwd=ROOT if "repo" in block.options else workdir,
                                  env=_env(workdir, workdir / "servelab-home", None), capture_output=True,
                                  text=True, timeout=BLOCK_TIMEOUT_S, check=True)
            out += ["$ " + command, *(line.rstrip() for line in proc.stdout.splitlines())]
        start = sum(len(line) + 1 for line in text.splitlines()[: block.line - 1])
        body = "\n".join(out) + "\n"
        if text[start:start + len(block.body)] == block.body and block.body != body:
            text = text[:start] + body + text[start + len(block.body):]
            changed += 1
    doc.write_text(text)
    return changed


if __name__ == "__main__":  # python tests/test_docs.py docs/cost.md …: regenerate shown outputs
    for name in sys.argv[1:]:
        print(f"{name}: {regenerate(Path(name).resolve())} block(s) rewritten")

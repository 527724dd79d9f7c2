"""The documented commands of README.md and docs/: how a page marks them, how they are run and
how what they print is compared with what the page shows (docs/contributing.md states the rules
for authors).

- A fenced block whose language is ``console`` runs: each line starting with ``$ `` is a command
  (a line ending in a backslash continues it), and the lines after it, up to the next command,
  are what it prints (standard output and error, as a terminal shows them).
- An HTML comment ``<!-- not-run: reason -->`` on the line before a fence marks the block as
  not runnable here, and why. Every shell block (``console``, ``sh``, ``bash``, ``shell``) and
  every block with a ``curl`` or a ``$`` prompt is one or the other.
- Comparison: JSON as data (field names, strings, booleans and integers exactly; other numbers
  within NUMBER_TOLERANCE; timing fields any number of seconds or milliseconds; date-times any
  date-time); a string or a line with ``...`` matches any text in its place; ``...`` alone on a
  line, as an array item or as an object member stands for any further lines, items or members.
  An HTTP head (``curl -i``) is compared line by line, then its body.
"""

import json
import math
import re
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SHELL_LANGUAGES = {"console", "sh", "bash", "shell", "shell-session", "zsh"}
RUNNABLE_LANGUAGE = "console"
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>\S.*?)\s*-->$")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
ELLIPSIS = "..."
_ELLIPSIS_TOKEN = "\u2026ellipsis\u2026"

# Numbers other than timings: LiteRT's kernels differ slightly between CPUs.
NUMBER_TOLERANCE = 0.01
# Fields that are timings: only their being a non-negative number is compared.
TIMING_FIELD = re.compile(r"(^|_)(time|seconds|ms)$|^processing_time$|_ms_median$")


@dataclass
class Command:
    text: str
    expected: str
    line: int


@dataclass
class Block:
    path: Path
    line: int
    language: str
    body: str
    not_run: str | None = None
    commands: list[Command] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return self.language == RUNNABLE_LANGUAGE and self.not_run is None

    @property
    def is_shell(self) -> bool:
        lines = self.body.splitlines()
        return (
            self.language in SHELL_LANGUAGES
            or any(line.lstrip().startswith(("curl ", "$ ")) for line in lines)
            or any(re.search(r"(^|\s|\|)curl\s", line) for line in lines)
        )

    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with their marks and (for console) commands."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        language = info.split()[0].lstrip(".{").rstrip("}") if info else ""
        body: list[str] = []
        start = index
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][len(opening["indent"]) :])
            index += 1
        index += 1
        previous = start - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        mark = NOT_RUN.match(lines[previous].strip()) if previous >= 0 else None
        block = Block(
            path=path,
            line=start + 1,
            language=language,
            body="\n".join(body),
            not_run=mark["reason"] if mark else None,
        )
        if block.language == RUNNABLE_LANGUAGE:
            block.commands = commands_of(body, first_line=start + 2)
        blocks.append(block)
    return blocks


def commands_of(lines: list[str], *, first_line: int) -> list[Command]:
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            if commands:
                commands[-1].expected += line + "\n"
            elif line.strip():
                raise ValueError(f"line {first_line + index}: output before the first command")
            index += 1
            continue
        text = line[2:]
        start = index
        while text.endswith("\\") and index + 1 < len(lines):
            index += 1
            text += "\n" + lines[index]
        commands.append(Command(text=text, expected="", line=first_line + start))
        index += 1
    return commands


def marking_problems(blocks: list[Block]) -> list[str]:
    """Blocks that break the convention: shell blocks neither run nor marked."""
    problems = []
    for block in blocks:
        if block.is_shell and not block.runnable and block.not_run is None:
            problems.append(
                f"{block.where()}: a shell block that is neither 'console' (run) nor marked "
                "'<!-- not-run: reason -->'"
            )
        elif block.runnable and not block.commands:
            problems.append(f"{block.where()}: a console block without a '$ ' command")
    return problems


# Comparison ------------------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def compare_output(expected: str, actual: str) -> None:
    """Raise Mismatch when ``actual`` is not what ``expected`` shows (see the module's rules)."""
    expected, actual = expected.strip("\n"), actual.strip("\n")
    if expected.startswith("HTTP/"):
        expected_head, _, expected_body = expected.partition("\n\n")
        actual = actual.replace("\r\n", "\n")
        actual_head, _, actual_body = actual.partition("\n\n")
        compare_lines(expected_head, actual_head)
        if expected_body.strip():
            compare_output(expected_body, actual_body)
        return
    wanted = _as_json(expected)
    if wanted is not None:
        try:
            got = json.loads(actual)
        except ValueError:
            raise Mismatch(f"expected JSON, got:\n{actual}") from None
        compare_json(wanted, got, where="$")
        return
    compare_lines(expected, actual)


def compare_lines(expected: str, actual: str) -> None:
    wanted = [line.rstrip() for line in expected.splitlines()]
    got = [line.rstrip() for line in actual.splitlines()]
    if not _lines_match(wanted, got):
        raise Mismatch("expected:\n" + "\n".join(wanted) + "\n\ngot:\n" + "\n".join(got))


def _lines_match(wanted: list[str], got: list[str]) -> bool:
    """Whether ``got`` matches ``wanted`` line by line, ``...`` lines standing for any lines
    (dynamic programming from the ends: match[i][j] is wanted[i:] against got[j:])."""
    rows, columns = len(wanted), len(got)
    match = [[False] * (columns + 1) for _ in range(rows + 1)]
    match[rows][columns] = True
    for i in range(rows - 1, -1, -1):
        for j in range(columns, -1, -1):
            if wanted[i].strip() == ELLIPSIS:
                match[i][j] = match[i + 1][j] or (j < columns and match[i][j + 1])
            else:
                match[i][j] = (
                    j < columns and _text_matches(wanted[i], got[j]) and match[i + 1][j + 1]
                )
    return match[0][0]


def _text_matches(wanted: str, got: str) -> bool:
    if ELLIPSIS not in wanted:
        return wanted == got
    pattern = ".*".join(re.escape(part) for part in wanted.split(ELLIPSIS))
    return re.fullmatch(pattern, got, re.DOTALL) is not None


def compare_json(wanted: Any, got: Any, *, where: str) -> None:
    key = where.rsplit(".", 1)[-1]
    if isinstance(wanted, dict):
        if not isinstance(got, dict):
            raise Mismatch(f"{where}: expected an object, got {got!r}")
        open_ended = _ELLIPSIS_TOKEN in wanted
        wanted = {name: value for name, value in wanted.items() if name != _ELLIPSIS_TOKEN}
        missing = wanted.keys() - got.keys()
        extra = got.keys() - wanted.keys()
        if missing or (extra and not open_ended):
            raise Mismatch(
                f"{where}: fields differ: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        for name, value in wanted.items():
            compare_json(value, got[name], where=f"{where}.{name}")
    elif isinstance(wanted, list):
        if not isinstance(got, list):
            raise Mismatch(f"{where}: expected an array, got {got!r}")
        open_ended = bool(wanted) and wanted[-1] == _ELLIPSIS_TOKEN
        items = wanted[:-1] if open_ended else wanted
        if len(got) < len(items) or (len(got) != len(items) and not open_ended):
            raise Mismatch(f"{where}: expected {len(items)} items, got {len(got)}: {got!r}")
        for index, value in enumerate(items):
            compare_json(value, got[index], where=f"{where}[{index}]")
    elif isinstance(wanted, str):
        if not isinstance(got, str):
            raise Mismatch(f"{where}: expected a string, got {got!r}")
        if _is_datetime(wanted) and _is_datetime(got):
            return
        if not _text_matches(wanted, got):
            raise Mismatch(f"{where}: expected {wanted!r}, got {got!r}")
    elif isinstance(wanted, bool) or wanted is None:
        if got is not wanted:
            raise Mismatch(f"{where}: expected {wanted!r}, got {got!r}")
    elif isinstance(wanted, int | float):
        if isinstance(got, bool) or not isinstance(got, int | float):
            raise Mismatch(f"{where}: expected a number, got {got!r}")
        if TIMING_FIELD.search(key.split("[")[0]):
            if got < 0:
                raise Mismatch(f"{where}: a timing below zero: {got!r}")
        elif isinstance(wanted, int) and isinstance(got, int):
            if wanted != got:
                raise Mismatch(f"{where}: expected {wanted}, got {got}")
        elif not math.isclose(wanted, got, abs_tol=NUMBER_TOLERANCE):
            raise Mismatch(f"{where}: expected {wanted} within {NUMBER_TOLERANCE}, got {got}")


def _is_datetime(text: str) -> bool:
    if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d", text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _as_json(text: str) -> Any:
    """The JSON a page shows (``...`` allowed as an item or member), or None if it is not JSON."""
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return json.loads(_ellipsis_to_token(text))
    except ValueError:
        return None


def _ellipsis_to_token(text: str) -> str:
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    index = 0
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif char in "[{":
            stack.append(char)
            out.append(char)
        elif char in "]}":
            if stack:
                stack.pop()
            out.append(char)
        elif text.startswith(ELLIPSIS, index):
            token = json.dumps(_ELLIPSIS_TOKEN)
            out.append(f"{token}: 0" if stack and stack[-1] == "{" else token)
            index += len(ELLIPSIS)
            continue
        else:
            out.append(char)
        index += 1
    return "".join(out)


# Running ---------------------------------------------------------------------------------------


class Shell:
    """One bash for a page: commands run in order in the same shell, so a variable one command
    sets is there for the next (as in a reader's terminal)."""

    def __init__(self, *, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.count = 0
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )

    def run(self, command: str, *, timeout: float = 300) -> tuple[int, str]:
        """Run ``command``; (exit status, what it printed on standard output and error)."""
        self.count += 1
        script = self.cwd / f".command-{self.count}.sh"
        output = self.cwd / f".command-{self.count}.out"
        script.write_text(command + "\n")
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(
            f'source {script} > {output} 2>&1 < /dev/null; echo "__done__ $?"\n'
        )
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stdout], [], [], max(left, 0))
            if not ready:
                raise TimeoutError(f"still running after {timeout:.0f} s: {command}")
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the shell ended during: {command}")
            if line.startswith("__done__ "):
                return int(line.split()[1]), output.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def run_commands(
    blocks: list[Block], *, shell: Shell, replacements: dict[str, str]
) -> Iterator[tuple[Block, Command, str | None]]:
    """Run every command of the runnable blocks in order; yield each with None when it printed
    what the page shows, or the reason it did not."""
    for block in blocks:
        if not block.runnable:
            continue
        for command in block.commands:
            status, printed = shell.run(substitute(command.text, replacements))
            problem = None
            if status != 0:
                problem = f"exit status {status}; it printed:\n{printed}"
            else:
                try:
                    compare_output(substitute(command.expected, replacements), printed)
                except Mismatch as mismatch:
                    problem = f"{mismatch}\nit printed:\n{printed[-3000:]}"
            yield block, command, problem

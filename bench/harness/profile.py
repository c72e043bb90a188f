"""Optional py-spy profiles of the server under load (`run.py --profile DIR`).

py-spy is not a Tally dependency: `.venv/bin/pip install py-spy` when you want profiles.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.procs import BIN, Server

TOP = 15


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


class Profiler:
    """Records one collapsed-stack profile per scenario and prints the hottest functions."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.command = _py_spy()
        folder.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def record(self, server: Server, name: str, seconds: float) -> Iterator[None]:
        """Sample every server process (on-CPU stacks only) while the block runs."""
        out = self.folder / f"{name}.txt"
        command = [
            self.command,
            "record",
            "--pid",
            str(server.process.pid),
            "--subprocesses",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            "250",
            "--duration",
            str(int(seconds) + 5),
            "--output",
            str(out),
        ]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            spy.wait(timeout=seconds + 60)
        print(f"\nProfile {name} ({out}):\n{summarise(out)}", file=sys.stderr)


def _function(frame: str) -> str:
    """`name (path/file.py:123)` → `name (path/file.py)`: lines of one function count together."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise(path: Path, top: int = TOP) -> str:
    """The functions with the most samples on top of the stack (self) and anywhere (total)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples. Self:"]
    lines += [f"  {n / samples:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("Total (inclusive):")
    lines += [f"  {n / samples:6.1%}  {f}" for f, n in total.most_common(top)]
    return "\n".join(lines)

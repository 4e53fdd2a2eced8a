"""Where benchmarks keep their figures: a Markdown file per benchmark in benchmarks/results/,
headed by the command that made it and the machine it ran on (figures differ by CPU kind)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from tunesmith.compute import hardware

RESULTS = Path(__file__).resolve().parent / "results"


def header(title: str) -> list[str]:
    """A result file's first lines: title, command, date and machine."""
    machine = hardware.describe()
    gpu = f", GPU {machine['gpu']}" if "gpu" in machine else ""
    command = shlex.join(["python", *sys.argv])
    return [
        f"# {title}",
        "",
        f"`{command}`, {time.strftime('%Y-%m-%d')}.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} threads, CPU flags "
        f"{' '.join(machine['cpu_flags'])}{gpu}; torch {machine['torch']}.",
        "",
    ]


def write(name: str, lines: list[str], folder: Path = RESULTS) -> Path:
    """FOLDER/NAME.md (benchmarks/results/ unless told), replaced whole."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_log(log: Path) -> list[dict]:
    """The runs a benchmark appended to its JSONL log, one dict a line."""
    import json

    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line]


def mean(runs: list[dict], key: str) -> float:
    """The mean of `key` over `runs` (the seeds or repeats of one arm)."""
    import statistics

    return statistics.mean(r[key] for r in runs)


class Transcript:
    """Prints a benchmark's lines as they come and keeps them for its results file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self, name: str, title: str, folder: Path = RESULTS) -> Path:
        return write(name, [*header(title), "```", *self.lines, "```"], folder)

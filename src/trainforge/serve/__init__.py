"""`trainforge serve RUN`: an OpenAI-compatible HTTP API for a trained run (FastAPI + uvicorn, extra `serve`)."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

from trainforge.errors import TrainforgeError
from trainforge.tracking.rundir import RunDir

ENGINES = ("auto", "torch", "llama.cpp")
log = logging.getLogger("trainforge.serve")


def build_app(run: RunDir, api_key: str | None = None, engine: str = "torch", **limits):
    """The app for a run, its model loaded; limits: max_body_bytes, max_tokens_limit."""
    try:
        from trainforge.serve.app import create_app
    except ImportError as err:
        raise TrainforgeError(
            f"Serving needs FastAPI and uvicorn ({err}); install them with `pip install 'trainforge[serve]'`."
        ) from None
    return create_app(load_backend(run, engine), run.name, api_key, **limits)


def load_backend(run: RunDir, engine: str = "torch"):
    """What the run's task serves with: completions (generative runs) or predictions (predictive runs). Completions
    run on torch or on llama.cpp; `auto` takes llama.cpp where it is installed and can load the run (a LLaMA-type
    model exported to GGUF), torch otherwise, saying which and why."""
    from trainforge.tasks import registry

    if engine not in ENGINES:
        raise TrainforgeError(f"Option `--backend` = {engine!r}: expected one of {', '.join(ENGINES)}.")
    entry = registry.for_run(run)
    torch_backend = entry.hook("backend", f"Run {run.path}")
    if engine == "torch" or (engine == "auto" and not entry.can("generate")):
        return torch_backend(run)
    entry.require("generate", f"Run {run.path} (--backend {engine})")
    if engine == "llama.cpp":
        return llama_cpp_backend(run)
    try:
        backend = llama_cpp_backend(run)
    except TrainforgeError as err:
        log.info("serving with torch, not llama.cpp: %s", err)
        return torch_backend(run)
    log.info("serving with llama.cpp (--backend torch serves with PyTorch)")
    return backend


def llama_cpp_backend(run: RunDir):
    """The run served by llama.cpp from its GGUF export, rendered and decoded by the run's own tokenizer."""
    from trainforge.export.gguf import cached_run_gguf
    from trainforge.inference import load_run_tokenizer
    from trainforge.inference.backends import refuse_masked_lm
    from trainforge.inference.llamacpp import LlamaCppGenerator, import_llama_cpp

    refuse_masked_lm(run)
    import_llama_cpp()  # a missing package is said before minutes of exporting
    return LlamaCppGenerator(cached_run_gguf(run, log), load_run_tokenizer(run))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes: the handler outlives one `serve` call, and whoever
    calls it again (a test, a notebook) may have replaced stderr since, closing the one a plain handler kept."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # always sys.stderr


def wait_passively(log: logging.Logger) -> None:
    """Make OpenMP threads sleep as soon as they wait (OMP_WAIT_POLICY=PASSIVE), unless the user chose a policy.
    By default libgomp spins up to ~3 ms at each wait while the process has no more OpenMP threads than cores, and a
    decoding step is hundreds of small parallel regions: on cores shared with other processes, the spinning thread
    holds the core that the thread it waits for needs, and a lone generation decoded several times slower
    (benchmarks/RESULTS.md). Those were the issue's slow non-streamed requests; streamed ones ran beside an earlier
    request's idle threads, and with more threads than cores libgomp spins 100 rounds only. The runtime reads the
    policy once, when torch loads it, so this must run before torch is imported."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    if "torch" in sys.modules:
        log.warning(
            "torch was imported before the server started, so its OpenMP threads spin while they wait, which is "
            "slow on shared cores: set OMP_WAIT_POLICY=PASSIVE before importing it"
        )
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    log.info(
        "OpenMP threads sleep while they wait (OMP_WAIT_POLICY=PASSIVE; ACTIVE spins instead, which may be faster "
        "when the server has the cores to itself)"
    )


def serve(
    run: RunDir, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, engine: str = "auto", **limits
) -> None:
    import uvicorn

    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    wait_passively(log)
    app = build_app(run, api_key, engine, **limits)
    try:
        exposed = not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        exposed = host != "localhost"
    if exposed and not api_key:
        log.warning("listening on %s without an API key: anyone who can reach it can use the model", host)
    uvicorn.run(app, host=host, port=port, log_level="info")

"""`trainforge serve --backend llama.cpp`: a generative run answered by llama.cpp (llama-cpp-python, extra `gguf`)
from the run's F16 GGUF export (export.gguf.cached_run_gguf). The run's own tokenizer renders,
encodes and decodes, as in the torch backend, so both engines see the same tokens and return text the same way; only
the forward passes and sampling move to llama.cpp, which decodes several times faster on CPU (benchmarks/RESULTS.md).

Concurrent requests each get a llama.cpp context of their own (the weights are memory-mapped once, shared), and the
cores are split between the generations running: llama.cpp's threads wait for each other by spinning, so contexts
that each used every core would take the cores from one another."""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from trainforge.errors import TrainforgeError
from trainforge.hardware import _cpu_flags, physical_cores
from trainforge.inference.backends import Completion, Generator, Sampling, _stop_at, until_stop

log = logging.getLogger("trainforge.serve")

AMX_FLAGS = {"amx_tile", "amx_int8", "amx_bf16"}
DEFAULT_SEED = 0xFFFFFFFF  # llama.cpp: a fresh random seed
_loading = threading.Lock()  # a model loads with llama-cpp-python's module-level defaults, which may be swapped
# Decodes one token in a child process: a CPU whose AMX the kernel or hypervisor does not enable kills it.
_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=32, n_threads=1, verbose=False)
next(llm.generate([1, 2, 3], temp=0.0))
llm.close()
"""


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as err:
        raise TrainforgeError(
            f"The llama.cpp backend needs llama-cpp-python ({err}): install it with `pip install 'trainforge[gguf]'` "
            "(it compiles llama.cpp: minutes), or serve with `--backend torch`."
        ) from None
    return llama_cpp


def extra_buffers_usable(gguf: Path) -> bool:
    """Whether llama.cpp may move weights into its extra buffer types (AMX tiles, repacked layouts). Where the CPU
    reports AMX, one token is decoded in a child process first: a process that uses AMX the kernel or hypervisor has
    not enabled dies, and this one must not."""
    if not AMX_FLAGS & _cpu_flags():
        return True
    probe = subprocess.run([sys.executable, "-c", _PROBE, str(gguf)], capture_output=True, text=True, timeout=600)
    if probe.returncode == 0:
        return True
    log.warning(
        "llama.cpp died using this CPU's AMX (exit %s: %s); serving without its AMX and repacked weight buffers "
        "(slower)",
        probe.returncode,
        probe.stderr.strip().splitlines()[-1:] or "no message",
    )
    return False


def _close_all(idle: queue.SimpleQueue) -> None:
    while not idle.empty():
        idle.get_nowait().close()


@contextlib.contextmanager
def _without_extra_buffers(llama_cpp):
    """Llama() takes no switch for extra buffer types (llama.cpp's --no-repack): its model parameters start from
    llama_model_default_params(), so that function answers with them off while the model loads."""
    default = llama_cpp.llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = default


class LlamaCppGenerator(Generator):
    """The torch Generator's interface (chat_prompt, encode, complete, stream) over llama.cpp contexts."""

    engine = "llama.cpp"

    def __init__(self, gguf: Path, tokenizer, max_concurrent: int = 4):
        """`gguf`: a LLaMA GGUF file (a run's: serve's llama_cpp_backend); `tokenizer`: the one it was exported with."""
        self.llama_cpp = import_llama_cpp()
        self._setup(Path(gguf), tokenizer, max_concurrent)

    def _setup(self, gguf: Path, tokenizer, max_concurrent: int) -> None:
        self.gguf, self.tokenizer = gguf, tokenizer
        self.extra_buffers = extra_buffers_usable(gguf)
        self.cores = physical_cores()
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.idle: queue.SimpleQueue = queue.SimpleQueue()  # contexts not generating now
        self.active, self.counting = 0, threading.Lock()
        first = self._context()  # loaded now: a broken file fails at start, not at a request
        self.context, self.vocab_size, self._compiler = first.n_ctx(), first.n_vocab(), None
        self.idle.put(first)
        # freed while the interpreter still works: llama-cpp-python's own finalizers fail noisily at its exit
        weakref.finalize(self, _close_all, self.idle)

    def _context(self):
        loading = contextlib.nullcontext() if self.extra_buffers else _without_extra_buffers(self.llama_cpp)
        with _loading, loading:
            return self.llama_cpp.Llama(
                str(self.gguf), n_ctx=0, n_threads=self.cores, n_threads_batch=self.cores, verbose=False
            )

    @contextlib.contextmanager
    def _borrowed(self):
        with self.slots:
            try:
                llm = self.idle.get_nowait()
            except queue.Empty:
                llm = self._context()
            with self.counting:
                self.active += 1
            try:
                yield llm
            finally:
                with self.counting:
                    self.active -= 1
                self.idle.put(llm)

    def _share_cores(self, llm) -> None:
        threads = max(1, self.cores // max(self.active, 1))
        self.llama_cpp.llama_set_n_threads(llm.ctx, threads, threads)

    def _texts(self, ids: list[int], sampling: Sampling, tokens: list[int]) -> Iterator[str]:
        """The text of `tokens` each time a new token has been appended to it, until end of sequence, max_tokens or
        a stop string."""
        matcher = _GrammarMask(self.grammar(sampling.constraint), self.vocab_size) if sampling.constraint else None
        with self._borrowed() as llm:
            llm.set_seed(DEFAULT_SEED if sampling.seed is None else sampling.seed)
            greedy = sampling.greedy
            self._share_cores(llm)
            # OpenAI semantics: temperature and nucleus only (no top-k, min-p or repetition penalty)
            for token in llm.generate(
                ids,
                temp=0.0 if greedy else (sampling.temperature or 1.0),
                top_p=1.0 if greedy else (sampling.top_p or 1.0),
                top_k=0,
                min_p=0.0,
                repeat_penalty=1.0,
                logits_processor=self.llama_cpp.LogitsProcessorList([matcher.mask]) if matcher else None,
            ):
                tokens.append(token)
                if matcher:
                    matcher.accept(token)
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                yield text
                if (
                    token == self.tokenizer.eos_token_id
                    or len(tokens) >= sampling.max_tokens
                    or _stop_at(text, sampling.stop) is not None
                ):
                    return
                self._share_cores(llm)  # generations may have started or ended meanwhile

    def complete(self, ids: list[int], sampling: Sampling) -> Completion:
        started, tokens = time.perf_counter(), []
        collections.deque(self._texts(ids, sampling, tokens), maxlen=0)  # run to the end
        return self._completion(ids, tokens, sampling, started)

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[str | Completion]:
        started, tokens = time.perf_counter(), []

        def pieces() -> Iterator[str]:
            sent = ""
            for text in self._texts(ids, sampling, tokens):
                if not text.endswith("\ufffd"):  # a character still split across tokens waits for its rest
                    yield text[len(sent) :]
                    sent = text

        yield from until_stop(pieces(), sampling.stop)
        yield self._completion(ids, tokens, sampling, started)


class _GrammarMask:
    """The torch backend's compiled grammar (xgrammar) as a llama-cpp-python logits processor, so that both engines
    constrain to the same compact JSON: llama.cpp calls `mask` on each step's logits, and each token it samples is
    fed back with `accept`."""

    def __init__(self, compiled, vocab_size: int):
        import xgrammar

        self.xgrammar, self.vocab_size = xgrammar, vocab_size
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)

    def mask(self, input_ids, scores):
        self.matcher.fill_next_token_bitmask(self.bitmask)
        logits = torch.from_numpy(np.array(scores, dtype=np.float32)).unsqueeze(0)  # llama.cpp's view is strided
        self.xgrammar.apply_token_bitmask_inplace(logits, self.bitmask, vocab_size=self.vocab_size)
        return logits[0].numpy()

    def accept(self, token: int) -> None:
        self.matcher.accept_token(token)

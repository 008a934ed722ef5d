"""What a served run answers with: a generative run completes prompts (whole or streamed token by token), a
predictive run (text classification, tabular) predicts. Each is loaded once, when the server starts; a task's
`backend` hook picks one."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from transformers import StoppingCriteria

from trainforge.config import load_config
from trainforge.errors import DataError, RunError, TrainforgeError
from trainforge.tracking.rundir import RunDir


@dataclass(frozen=True)
class Constraint:
    """What constrained decoding lets the answer be: JSON valid under `schema`, written compactly as json.dumps
    writes it (free whitespace lets a small model run on with blank lines), between `before` and `after`."""

    schema: dict
    before: str = ""
    after: str = ""


@dataclass
class Sampling:
    max_tokens: int
    temperature: float | None = None  # None or 0: greedy
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()  # the answer ends before the first of these (OpenAI's `stop`)
    constraint: Constraint | None = None

    @property
    def greedy(self) -> bool:
        return not (self.temperature or 0) > 0 and (self.top_p is None or self.top_p >= 1)


def _stop_at(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def until_stop(pieces: Iterator[str], stops: tuple[str, ...]) -> Iterator[str]:
    """Streamed text up to the first stop string. Text that could be the start of a stop string is held back until
    it is known not to be one; pieces after a stop are read (the generation ends by itself) but dropped."""
    hold, pending, stopped = max(map(len, stops), default=1) - 1, "", False
    for piece in pieces:
        if stopped:
            continue
        pending += piece
        cut = _stop_at(pending, stops)
        if cut is not None:
            pending, stopped = pending[:cut], True
        ready = len(pending) if stopped else max(len(pending) - hold, 0)
        if ready:
            yield pending[:ready]
            pending = pending[ready:]
    if pending:
        yield pending


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of sequence) | "length" (max_tokens reached)
    seconds: float


def refuse_masked_lm(run: RunDir) -> None:
    if load_config(run.file("config.yaml")).training.objective == "mlm":
        raise RunError(
            f"Run {run.path} trained a masked LM, which fills in masks rather than generating text; "
            "only causal-LM runs (sft, clm objectives) can be served for completions."
        )


class _Cancelled(StoppingCriteria):
    """Stopping criterion: ends generation once the client has gone (a streamed request was disconnected)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Generator:
    """Generations run side by side, each in its request's thread with its own KV cache (the weights are only read),
    so a short request is not queued behind a long stream. Sampled ones take turns: they draw from torch's global
    RNG, and a seeded request must repeat whatever else is running."""

    kind = "generative"
    engine = "torch"

    def __init__(self, run: RunDir, max_concurrent: int = 4):
        from trainforge.evaluation.lm import virtual_token_method
        from trainforge.inference import load_run_model

        refuse_masked_lm(run)
        model, tokenizer = load_run_model(run)
        if virtual_token_method(model) == "PREFIX_TUNING":
            raise RunError(
                f"Run {run.path} is prefix-tuned, and peft's `generate`, which streaming and sampling here "
                "rely on, decodes prefix-tuned models wrong (trainforge's evaluation and `predict` decode "
                "them right): score it with `trainforge eval` / `predict`, or serve a LoRA or prompt-tuned run."
            )
        self._serve(model, tokenizer, max_concurrent)

    @classmethod
    def of_model(cls, model, tokenizer, max_concurrent: int = 4) -> Generator:
        """A causal LM already loaded, without a run around it (benchmarks/serve_concurrency.py)."""
        generator = cls.__new__(cls)
        generator._serve(model.eval(), tokenizer, max_concurrent)
        return generator

    def _serve(self, model, tokenizer, max_concurrent: int) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.vocab_size = model.config.vocab_size  # the logits' width, which may pad past the tokenizer's
        self.slots = threading.BoundedSemaphore(max_concurrent)  # bounds the KV caches held (memory) at once
        self.sampling = threading.Lock()
        self._compiler = None

    def chat_prompt(self, messages: list[dict], tools: list[dict] | None = None) -> str:
        from trainforge.data.tokenize import render

        return render(self.tokenizer, messages, add_generation_prompt=True, tools=tools)

    def grammar(self, constraint: Constraint):
        """The constraint compiled for this tokenizer (xgrammar caches compilations); a schema it cannot compile
        raises TrainforgeError."""
        try:
            import xgrammar
        except ImportError as err:
            raise TrainforgeError(
                f"Constrained decoding needs xgrammar ({err}); install it with `pip install 'trainforge[serve]'`."
            ) from None
        if self._compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
            self._compiler = xgrammar.GrammarCompiler(info)
        try:
            grammar = xgrammar.Grammar.from_json_schema(json.dumps(constraint.schema), any_whitespace=False)
        except Exception as err:  # noqa: BLE001 - xgrammar raises plain RuntimeError / ValueError
            raise TrainforgeError(f"The JSON schema cannot be enforced: {err}") from None
        text = lambda t: xgrammar.Grammar.from_ebnf(f"root ::= {json.dumps(t)}")  # noqa: E731 - a literal
        parts = [*([text(constraint.before)] if constraint.before else []), grammar]
        parts += [text(constraint.after)] if constraint.after else []
        return self._compiler.compile_grammar(xgrammar.Grammar.concat(*parts) if len(parts) > 1 else grammar)

    def encode(self, prompt: str) -> list[int]:
        # Rendered chat prompts carry their special tokens already; raw prompts are taken as given, as in `predict`.
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _kwargs(self, ids: list[int], sampling: Sampling) -> dict:
        kwargs = {
            "input_ids": torch.tensor([ids]),
            "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "max_new_tokens": sampling.max_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            "do_sample": not sampling.greedy,
        }
        if sampling.greedy:  # the model's own sampling defaults (generation_config.json) do not apply
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:  # OpenAI semantics: temperature and nucleus only, no top-k cut
            kwargs.update(temperature=sampling.temperature or 1.0, top_p=sampling.top_p or 1.0, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sampling.constraint:  # a processor holds its parse state: one per generation
            from xgrammar.contrib.hf import LogitsProcessor

            kwargs["logits_processor"] = [LogitsProcessor(self.grammar(sampling.constraint))]
        return kwargs

    def _generate(self, ids: list[int], sampling: Sampling, **extra) -> torch.Tensor:
        turn = contextlib.nullcontext() if sampling.greedy else self.sampling
        with turn, self.slots, torch.no_grad():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            return self.model.generate(**self._kwargs(ids, sampling), **extra)[0, len(ids) :]

    def _completion(self, ids: list[int], tokens: list[int], sampling: Sampling, started: float) -> Completion:
        ended = bool(tokens) and tokens[-1] == self.tokenizer.eos_token_id
        reason = "length" if len(tokens) >= sampling.max_tokens and not ended else "stop"
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _stop_at(text, sampling.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        return Completion(text, len(ids), len(tokens), reason, time.perf_counter() - started)

    def complete(self, ids: list[int], sampling: Sampling) -> Completion:
        started = time.perf_counter()
        return self._completion(ids, self._generate(ids, sampling).tolist(), sampling, started)

    def stream(self, ids: list[int], sampling: Sampling) -> Iterator[str | Completion]:
        """Text pieces as they are decoded, then the Completion (whose text is the pieces joined)."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        started = time.perf_counter()
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        gone = threading.Event()
        result: dict = {}

        def work():
            try:
                result["new"] = self._generate(
                    ids, sampling, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled(gone)])
                )
            except BaseException as err:  # noqa: BLE001 - re-raised in the reading thread
                result["error"] = err
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            yield from until_stop(streamer, sampling.stop)
            thread.join()
            if "error" in result:
                raise result["error"]
            yield self._completion(ids, result["new"].tolist(), sampling, started)
        finally:
            gone.set()


class Predictor:
    """A predictive run's backend: a list of inputs of one type (texts, or rows {column: value}) → a list of
    answers ({index, prediction, ...}). Each task builds its own from its batch predictor."""

    kind = "predictive"

    def __init__(self, answer: Callable[[list], list[dict]], accepts: type, described: str, task: str):
        self.answer, self.accepts, self.described, self.task = answer, accepts, described, task

    def predict(self, inputs: list) -> list[dict]:
        if not inputs or not all(isinstance(x, self.accepts) for x in inputs):
            raise DataError(f"Field `input` must be {self.described} for this {self.task} run.")
        return self.answer(inputs)

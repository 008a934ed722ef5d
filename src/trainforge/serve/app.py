"""OpenAI-compatible HTTP API for one run: /v1/chat/completions (with tools and structured outputs) and
/v1/completions (streamed as server-sent events on request), /v1/models, /v1/predict for classifiers and tabular
models, /health. Errors answer with OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from typing import Iterator, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from trainforge.errors import DataError, TrainforgeError
from trainforge.inference.backends import Completion, Constraint, Generator, Predictor, Sampling
from trainforge.serve.text import Text, valid_unicode
from trainforge.serve.tools import call_constraint, message, split_calls

log = logging.getLogger("trainforge.serve")
MAX_BODY_BYTES = 1_000_000
MAX_TOKENS_LIMIT = 4096
MIN_TEMPERATURE = 1e-6  # far smaller (1e-38) overflows the float32 logits / temperature to inf: sampling fails


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type


def _error(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


# requests ----------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # an unsupported parameter (tools, logprobs, ...) is refused, not ignored


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Strict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, content):
        # checked here rather than in each union branch, so the error names messages.N.content
        if content is not None:
            valid_unicode(content if isinstance(content, str) else "".join(p.text for p in content))
        return content

    @model_validator(mode="after")
    def _roles(self):
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only an assistant message has tool_calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("only a tool message has a tool_call_id")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is missing (only an assistant message with tool_calls may leave it out)")
        return self

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])

    def plain(self) -> dict:
        """The message as data/formats.py reads OpenAI messages (tool calls with their arguments as JSON text)."""
        out = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            out["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


class FunctionSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
    description: str | None = None
    parameters: dict | None = None
    strict: bool | None = None  # calls are always checked against `parameters` where decoding is constrained


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class ChosenFunction(_Strict):
    name: str


class ToolChoice(_Strict):
    type: Literal["function"]
    function: ChosenFunction


class JSONSchemaFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    json_schema: dict = Field({"type": "object"}, alias="schema")  # none given: any JSON object
    strict: bool | None = None  # always enforced


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema(self):
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given with, and only with, type json_schema")
        return self

    def constraint(self) -> Constraint | None:
        if self.type == "text":
            return None
        return Constraint(self.json_schema.json_schema if self.json_schema else {"type": "object"})


class StreamOptions(_Strict):
    include_usage: bool = False


class _Generation(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # the range torch.manual_seed takes
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > 4 or "" in stops:
            raise ValueError("stop takes up to 4 non-empty strings")
        return [valid_unicode(s) for s in stops]

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, temperature):
        # a tiny positive temperature is greedy in effect; raised to one whose logits stay finite
        return max(temperature, MIN_TEMPERATURE) if temperature else temperature


class ChatRequest(_Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(_Generation):
    prompt: Text


class PredictRequest(_Strict):
    model: str
    input: str | dict | list[str] | list[dict]


# app ---------------------------------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is answered 413 before the app reads it (declared or streamed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        chunks, size, more = [], 0, True
        if declared and declared.isdigit() and int(declared) > self.limit:
            more = False
            size = int(declared)
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False) and size <= self.limit
        if size > self.limit:
            response = _error(
                413, f"The request body is over the server's limit of {self.limit} bytes.", code="request_too_large"
            )
            return await response(scope, receive, send)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # e.g. the disconnect a streaming response listens for
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def create_app(
    backend: Generator | Predictor,
    name: str,
    api_key: str | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_tokens_limit: int = MAX_TOKENS_LIMIT,
) -> FastAPI:
    """The API serving `backend` under the model name `name`; with `api_key`, /v1 wants `Authorization: Bearer`."""

    def authorized(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), api_key.encode()):
            raise APIError(
                401, "Missing or incorrect API key: send it as `Authorization: Bearer <key>`.", code="invalid_api_key"
            )

    app = FastAPI(title=f"trainforge: {name}", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    v1 = [Depends(authorized)]
    created = int(time.time())

    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return _error(err.status, err.message, err.type, err.param, err.code, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            return _error(
                400,
                f"The request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}.",
                code="invalid_json",
            )
        loc = [str(p) for p in first["loc"] if p != "body"]  # e.g. messages, 0, role
        message = "Unrecognized request argument supplied" if first["type"] == "extra_forbidden" else first["msg"]
        return _error(400, f"{message}: {'.'.join(loc)}." if loc else f"{message}.", param=loc[0] if loc else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), code="not_found" if err.status_code == 404 else None)

    @app.exception_handler(TrainforgeError)
    async def data_error(request, err: TrainforgeError):
        return _error(400, str(err))

    def check_model(requested: str, wanted: type) -> None:
        if requested != name:
            raise APIError(
                404, f"The model {requested!r} does not exist; this server serves {name!r}.", "model", "model_not_found"
            )
        if not isinstance(backend, wanted):
            endpoint = "/v1/predict" if isinstance(backend, Predictor) else "/v1/chat/completions or /v1/completions"
            raise APIError(
                404, f"Model {name!r} is a {backend.kind} model; use {endpoint}.", "model", "unsupported_endpoint"
            )

    @app.get("/health")
    def health():
        return {"status": "ok", "model": name, "kind": backend.kind}

    @app.get("/v1/models", dependencies=v1)
    def models():
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "trainforge"}],
        }

    @app.get("/v1/models/{model}", dependencies=v1)
    def model(model: str):
        check_model(model, object)
        return {"id": name, "object": "model", "created": created, "owned_by": "trainforge"}

    def prepare(
        req: _Generation, prompt: str, default_tokens: int, constraint: Constraint | None = None
    ) -> tuple[list[int], Sampling]:
        check_model(req.model, Generator)
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or default_tokens
        if max_tokens > max_tokens_limit:
            raise APIError(
                400,
                f"max_tokens is {max_tokens}; this server allows at most {max_tokens_limit}.",
                "max_tokens",
                "invalid_value",
            )
        ids = backend.encode(prompt)
        param = "messages" if isinstance(req, ChatRequest) else "prompt"
        if not ids:  # generation needs at least one token to continue from
            raise APIError(400, f"The {param} is empty: it encodes to no tokens.", param, "invalid_value")
        if backend.context and len(ids) + max_tokens > backend.context:
            raise APIError(
                400,
                f"This model's maximum context length is {backend.context} tokens; the prompt has "
                f"{len(ids)} and max_tokens asks for {max_tokens} more.",
                param,
                "context_length_exceeded",
            )
        if constraint:
            param = "response_format" if req.response_format else "tool_choice"
            try:
                backend.grammar(constraint)  # a schema it cannot enforce is refused before anything streams
            except TrainforgeError as err:
                raise APIError(400, str(err), param, "invalid_value") from None
        return ids, Sampling(max_tokens, req.temperature, req.top_p, req.seed, tuple(req.stop or ()), constraint)

    def tooling(req: ChatRequest) -> tuple[list[dict] | None, Constraint | None]:
        """The tools shown to the model (none with tool_choice "none") and what constrains its answer: a call
        (tool_choice "required" or a named function) or the response_format's JSON."""
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        from trainforge.data.tools import declared_functions

        if req.tool_choice is not None and not req.tools:
            raise APIError(400, "tool_choice is only allowed when tools are given.", "tool_choice", "invalid_value")
        tools = (
            [t.model_dump(exclude_none=True) for t in req.tools] if req.tools and req.tool_choice != "none" else None
        )
        constraint = req.response_format.constraint() if req.response_format else None
        if constraint:
            if tools:
                raise APIError(
                    400,
                    "response_format json_object / json_schema cannot be combined with tools (the answer is either "
                    'a call or the JSON); send tool_choice "none" or leave the tools out.',
                    "response_format",
                    "invalid_value",
                )
            try:
                Draft202012Validator.check_schema(constraint.schema)
            except SchemaError as err:
                problem = f"response_format.json_schema.schema is not a JSON schema: {err.message}."
                raise APIError(400, problem, "response_format", "invalid_value") from None
        if not tools:
            return None, constraint
        try:
            declared = declared_functions(tools)
        except ValueError as err:
            raise APIError(400, f"tools: {err}.", "tools", "invalid_value") from None
        if isinstance(req.tool_choice, ToolChoice):
            chosen = req.tool_choice.function.name
            if chosen not in declared:
                raise APIError(
                    400,
                    f"tool_choice names the function {chosen!r}, which tools does not declare "
                    f"(declared: {', '.join(declared)}).",
                    "tool_choice",
                    "invalid_value",
                )
            return tools, call_constraint({chosen: declared[chosen]})
        return tools, call_constraint(declared) if req.tool_choice == "required" else None

    def usage(c: Completion) -> dict:
        return {
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "total_tokens": c.prompt_tokens + c.completion_tokens,
        }

    def logged(c: Completion) -> Completion:
        log.info(
            "%s: %d prompt + %d completion tokens in %.2f s (%.1f tokens/s)",
            name,
            c.prompt_tokens,
            c.completion_tokens,
            c.seconds,
            c.completion_tokens / max(c.seconds, 1e-9),
        )
        return c

    def events(req: _Generation, items: Iterator, chunk) -> Iterator[str]:
        """Server-sent events: one chunk per decoded piece (or tool calls), a last one with the finish reason,
        [DONE]."""
        send = lambda obj: f"data: {json.dumps(obj)}\n\n"  # noqa: E731
        try:
            for item in items:
                if isinstance(item, Completion):
                    yield send(chunk(None, logged(item).finish_reason))
                    if req.stream_options and req.stream_options.include_usage:
                        yield send({**chunk(None, None), "choices": [], "usage": usage(item)})
                else:
                    yield send(chunk(item, None))
        except Exception as err:  # headers are sent: the error travels as an event
            log.exception("generation failed")
            yield send({"error": {"message": str(err), "type": "server_error", "param": None, "code": None}})
        yield "data: [DONE]\n\n"

    def conversation(req: ChatRequest, tools: list[dict] | None) -> list[dict]:
        """The request's messages as the chat template takes them; a tool round trip (tool results, assistant
        tool_calls) is read as training data is (data/formats.py), so calls render as the model learned them."""
        if not any(m.role == "tool" or m.tool_calls for m in req.messages):
            return [{"role": m.role, "content": m.text()} for m in req.messages]
        from trainforge.data.formats import normalize_rows

        # the placeholder answer makes it a conversation the chat layout reads; it is dropped again
        row = {"messages": [*(m.plain() for m in req.messages), {"role": "assistant", "content": "-"}]}
        try:
            return normalize_rows([(1, {**row, "tools": tools or []})], "chat", "(request)")[0]["messages"][:-1]
        except DataError as err:
            problem = str(err).removeprefix("Data file (request), row 1: ")
            raise APIError(400, f"The messages cannot be read: {problem}", "messages", "invalid_value") from None

    @app.post("/v1/chat/completions", dependencies=v1)
    def chat_completions(req: ChatRequest):
        check_model(req.model, Generator)
        tools, constraint = tooling(req)
        messages = conversation(req, tools)
        try:
            prompt = backend.chat_prompt(messages, tools)
        except Exception as err:  # noqa: BLE001 - no chat template, or one that refuses these roles
            raise APIError(400, f"The model's chat template cannot render these messages: {err}", "messages") from None
        ids, sampling = prepare(req, prompt, 256, constraint)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": name}
        if req.stream:
            first, called = [True], [False]

            def chunk(item, finish):
                if isinstance(item, list):  # a generation's tool calls, each whole in one delta
                    delta, called[0] = {"tool_calls": [{"index": i, **c} for i, c in enumerate(item)]}, True
                else:
                    delta = {} if item is None else {"content": item}
                if first[0] and item is not None:
                    delta, first[0] = {"role": "assistant", **delta}, False
                if finish and called[0]:
                    finish = "tool_calls"
                return {
                    **base,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                }

            items = backend.stream(ids, sampling)
            return StreamingResponse(
                events(req, split_calls(items) if tools else items, chunk), media_type="text/event-stream"
            )
        c = logged(backend.complete(ids, sampling))
        content, calls = message(c.text) if tools else (c.text, [])
        answer = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
        return {
            **base,
            "object": "chat.completion",
            "usage": usage(c),
            "choices": [
                {
                    "index": 0,
                    "message": answer,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else c.finish_reason,
                }
            ],
        }

    @app.post("/v1/completions", dependencies=v1)
    def completions(req: CompletionRequest):
        ids, sampling = prepare(req, req.prompt, 16)  # 16: OpenAI's default for this endpoint
        base = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
        }
        if req.stream:

            def chunk(text, finish):
                return {
                    **base,
                    "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}],
                }

            return StreamingResponse(events(req, backend.stream(ids, sampling), chunk), media_type="text/event-stream")
        c = logged(backend.complete(ids, sampling))
        return {
            **base,
            "usage": usage(c),
            "choices": [{"index": 0, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}],
        }

    @app.post("/v1/predict", dependencies=v1)
    def predict(req: PredictRequest):
        check_model(req.model, Predictor)
        inputs = req.input if isinstance(req.input, list) else [req.input]
        return {"object": "list", "model": name, "data": backend.predict(inputs)}

    return app

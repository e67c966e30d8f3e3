"""The body of `POST /v1/completions` (OpenAI's completions API, as vLLM serves it: `model` names
an adapter or the base) and what it asks of the decoder: one clear message for anything wrong."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from peftrun.errors import PeftrunError


class BadRequest(PeftrunError):
    """A request the server cannot take as written (HTTP 400)."""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class CompletionBody(BaseModel):
    """OpenAI's fields; those peftrun cannot honour are accepted only when they ask for nothing."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    prompt: str | list[str] = Field(description="sources as the dataset holds them (an E2E MR, a document)")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0: greedy; > 0: sampling")
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    num_beams: int | None = Field(None, ge=1, le=16, description="beam search (not in OpenAI's API)")
    user: str | None = None
    # Accepted at their "off" values only (clients send them):
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as text (OpenAI's list of parts: its text parts, joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise BadRequest("'messages': only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatBody(BaseModel):
    """OpenAI's chat completions fields (those peftrun cannot honour only at their "off" values)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    num_beams: int | None = Field(None, ge=1, le=16)
    user: str | None = None
    logprobs: bool = False
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None


ROLES = ("system", "developer", "user", "assistant")


def parse_chat(raw: bytes) -> CompletionBody:
    """A chat completions body as the completions body it asks for: the last message, a user
    message, is the source (its text as the dataset holds a source); system messages and earlier
    turns are accepted and not read (a run answers in the layout it was trained on: its own system
    line, its instruction, one user message)."""
    try:
        chat = ChatBody.model_validate_json(raw)
    except ValidationError as err:
        raise BadRequest(describe(err, ChatBody)) from None
    unsupported = {
        "logprobs": chat.logprobs,
        "frequency_penalty": chat.frequency_penalty != 0,
        "presence_penalty": chat.presence_penalty != 0,
        "logit_bias": bool(chat.logit_bias),
        "tools": bool(chat.tools),
        "response_format": chat.response_format not in (None, {"type": "text"}),
    }
    for name, asked in unsupported.items():
        if asked:
            raise BadRequest(f"'{name}' is not supported by peftrun serve; leave it out")
    if not chat.messages:
        raise BadRequest("'messages' is empty; end it with a user message (the source)")
    for i, message in enumerate(chat.messages):
        if message.role not in ROLES:
            raise BadRequest(f"'messages.{i}.role': {message.role!r} is not one of {', '.join(ROLES)}")
    last = chat.messages[-1]
    if last.role != "user":
        raise BadRequest(f"the last message must be the user's (the source); it is the {last.role}'s")
    if chat.max_tokens is not None and chat.max_completion_tokens not in (None, chat.max_tokens):
        raise BadRequest("'max_tokens' and 'max_completion_tokens' differ: give one")
    same = ("model", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options", "num_beams")
    fields = chat.model_dump(include={*same, "user"})
    fields["max_tokens"] = chat.max_tokens or chat.max_completion_tokens
    fields["prompt"] = last.text()
    return parse_body(CompletionBody.model_validate(fields).model_dump_json(exclude_none=True).encode())


def parse_body(raw: bytes) -> CompletionBody:
    try:
        body = CompletionBody.model_validate_json(raw)
    except ValidationError as err:
        raise BadRequest(describe(err, CompletionBody)) from None
    unsupported = {
        "echo": body.echo,
        "logprobs": body.logprobs is not None,
        "best_of": body.best_of not in (None, body.n),
        "frequency_penalty": body.frequency_penalty != 0,
        "presence_penalty": body.presence_penalty != 0,
        "logit_bias": bool(body.logit_bias),
        "suffix": body.suffix is not None,
    }
    for name, asked in unsupported.items():
        if asked:
            raise BadRequest(f"'{name}' is not supported by peftrun serve; leave it out")
    if isinstance(body.prompt, list) and not body.prompt:
        raise BadRequest("'prompt' is an empty list; give a string or a list of strings")
    if body.num_beams and body.num_beams > 1 and (body.temperature is not None or body.top_p is not None):
        raise BadRequest(
            "'num_beams' > 1 searches; 'temperature' and 'top_p' choose greedy or sampling: ask for one"
        )
    if len(stops(body)) > 16:
        raise BadRequest("'stop' holds more than 16 strings")
    return body


def stops(body: CompletionBody) -> tuple[str, ...]:
    if body.stop is None:
        return ()
    found = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop)
    if any(not s for s in found):
        raise BadRequest("'stop' holds an empty string")
    return found


def decode_settings(body: CompletionBody, default):
    """The adapter's decoding settings (a DecodeConfig) with the request's fields over them."""
    from peftrun.config import DecodeConfig

    values: dict[str, Any] = default.model_dump()
    if body.max_tokens is not None:
        values.update(max_new_tokens=body.max_tokens, max_length=None)
    if body.num_beams is not None:
        values.update(num_beams=body.num_beams, do_sample=False)
    if body.temperature == 0:
        values.update(do_sample=False, num_beams=1)
    elif body.temperature is not None or body.top_p is not None:
        values.update(do_sample=True, num_beams=1)
        if body.temperature is not None:
            values["temperature"] = body.temperature
        if body.top_p is not None:
            values["top_p"] = body.top_p
    if values["max_new_tokens"] is None:
        values["max_new_tokens"] = values["max_length"]  # a row's limit; see Engine
    try:
        return DecodeConfig.model_validate(values)
    except ValidationError as err:
        raise BadRequest(describe(err, DecodeConfig)) from None


_UNIONS = {"prompt": "a string or a list of strings", "stop": "a string or a list of strings"}


def describe(err: ValidationError, model: type[BaseModel]) -> str:
    """The first problem, in one line that names the field."""
    problem = err.errors()[0]
    where = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "json_invalid":
        return f"the body is not valid JSON ({problem['ctx'].get('error', problem['msg'])})"
    if problem["type"] == "model_type":
        return "the body must be a JSON object"
    if problem["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(problem["loc"][-1]), list(model.model_fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown field '{where}'{hint}"
    if problem["type"] == "missing":
        return f"'{where}' is required"
    field = str(problem["loc"][0]) if problem["loc"] else ""
    if field in _UNIONS and len(problem["loc"]) >= 2 and not str(problem["loc"][1]).isdigit():
        return f"'{field}' must be {_UNIONS[field]}"
    return f"'{where}': {problem['msg']}"

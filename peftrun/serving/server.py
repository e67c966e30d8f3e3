"""`peftrun serve`: one frozen base and many adapters behind an OpenAI-compatible HTTP API
(FastAPI + uvicorn; the batching is peftrun.serving.engine).

    GET  /health                  no API key needed
    GET  /metrics                 Prometheus text
    GET  /v1/models               the base and every adapter, with its kind and run
    POST /v1/completions          model = adapter name (or the base's), prompt = the source(s)
    POST /v1/chat/completions     runs trained with data.format: chat; the last user message is the source
    POST /v1/adapters             {name, path}: load an adapter from under --adapter-root
    DELETE /v1/adapters/{name}    unload it once its requests are answered

Errors are OpenAI's shape, {"error": {"message", "type", "code"}}: 400 bad input, 401 no or a
wrong API key, 403 loading not allowed there, 404 unknown model, 409 name taken, 429 queue full
(with Retry-After).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import signal
import sys
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from peftrun.errors import PeftrunError
from peftrun.serving.engine import Completion, Engine, EngineBroken, QueueFull, UnknownAdapter
from peftrun.serving.requests import decode_settings, parse_body, parse_chat, stops

ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def _error_response(status: int, message: str, kind: str, headers=None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    adapter_root: Path | None = None


def create_app(engine: Engine, settings: ServeSettings) -> FastAPI:
    aset = engine.adapters
    metrics = engine.metrics
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)  # after uvicorn has answered every request in flight

    app = FastAPI(title="peftrun serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def api_key(request: Request, call_next):
        if settings.api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            expected = f"Bearer {settings.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                why = "a wrong API key" if given else "no API key (send 'Authorization: Bearer KEY')"
                return _error_response(401, f"{why}", "authentication_error", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error_response(err.status, err.message, err.kind, err.headers)

    @app.exception_handler(PeftrunError)
    async def bad_request(request: Request, err: PeftrunError):
        """A request peftrun cannot take (BadRequest, a malformed E2E MR, ...): 400, one line."""
        return _error_response(400, str(err), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        """FastAPI's own refusals (no such route, wrong method) in OpenAI's error shape too."""
        return _error_response(err.status_code, str(err.detail), "invalid_request_error", err.headers)

    @app.get("/health")
    async def health():
        if engine.broken:
            return _error_response(503, engine.broken, "server_error")
        return {"status": "ok", "base": engine.base_name, "adapters": len(engine.names())}

    @app.get("/metrics")
    async def prometheus():
        metrics.adapters_loaded.set(len(engine.names()))
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [_model_card(engine, None, started)] + [
            _model_card(engine, name, started) for name in engine.names()
        ]}  # fmt: skip

    @app.post("/v1/completions")
    async def completions(request: Request):
        arrived = time.perf_counter()
        return await _answer(request, parse_body(await _body(request)), arrived, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        """For runs trained with `data.format: chat`: the last user message is the source, laid
        out as the run's own chat prompt (peftrun.serving.requests.parse_chat)."""
        arrived = time.perf_counter()
        return await _answer(request, parse_chat(await _body(request)), arrived, chat=True)

    async def _answer(request: Request, body, arrived: float, chat: bool):
        adapter = None if body.model == engine.base_name else body.model
        try:
            engine.check_adapter(adapter)
        except UnknownAdapter as err:
            metrics.requests.labels("unknown", "404").inc()  # (a client's string is no label)
            raise ApiError(404, str(err), "not_found_error") from None
        if chat:
            _chat_layout(engine, adapter, body.model)
        completion = _completion(engine, body, adapter)
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        completion.emit = lambda event: loop.call_soon_threadsafe(queue.put_nowait, event)
        try:
            engine.submit(completion)
        except QueueFull as err:
            metrics.requests.labels(body.model, "429").inc()
            raise ApiError(429, str(err), "rate_limit_error", {"Retry-After": "1"}) from None
        except UnknownAdapter as err:
            raise ApiError(404, str(err), "not_found_error") from None
        except EngineBroken as err:
            raise ApiError(503, str(err), "server_error") from None
        kind = _ChatAnswer if chat else _Answer
        answer = kind(completion, body, uuid.uuid4().hex, arrived, engine)
        if body.stream:
            return StreamingResponse(answer.stream(queue, engine), media_type="text/event-stream")
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            while not answer.finished:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():  # the client left: nobody will read the answer, free its rows
                    getter.cancel()
                    engine.cancel(completion)
                    return Response(status_code=499)
                answer.take(getter.result())
        finally:
            gone.cancel()
        if answer.error:
            raise ApiError(500, answer.error, "server_error")
        return answer.whole()

    def managed() -> None:
        if settings.adapter_root is None:
            raise ApiError(
                403,
                "loading and unloading adapters is off: start the server with --adapter-root DIR",
                "permission_error",
            )

    @app.post("/v1/adapters", status_code=201)
    async def load_adapter(request: Request):
        managed()
        try:
            body = json.loads(await _body(request))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, 'the body is not valid JSON; send {"name": ..., "path": ...}') from None
        if not isinstance(body, dict) or set(body) != {"name", "path"}:
            raise ApiError(400, 'send exactly {"name": NAME, "path": RUN_DIR under --adapter-root}')
        name, path = body["name"], body["path"]
        if not isinstance(name, str) or not ADAPTER_NAME.fullmatch(name):
            raise ApiError(
                400,
                "'name': letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit",
            )
        if not isinstance(path, str) or not path:
            raise ApiError(400, "'path': a run directory, relative to --adapter-root")
        _name_free(engine, name)
        folder = _inside(settings.adapter_root, path)
        try:
            await asyncio.wrap_future(engine.call(lambda: _load(engine, name, folder, settings.adapter_root)))
        except ApiError:
            raise
        except Exception as err:  # a broken or foreign adapter: refused, and nothing of it stays
            raise ApiError(400, f"adapter {name} not loaded: {err}") from None
        return _model_card(engine, name, started)

    @app.delete("/v1/adapters/{name}")
    async def unload_adapter(name: str):
        managed()
        if name == engine.base_name:
            raise ApiError(400, "the base model cannot be unloaded")
        try:
            engine.check_adapter(name)
        except UnknownAdapter as err:
            raise ApiError(404, str(err), "not_found_error") from None
        engine.closing.add(name)  # new requests for it get 404 from now on

        def drop():
            aset.remove(name)
            engine.closing.discard(name)

        await asyncio.wrap_future(engine.call(drop, ready=lambda: engine.unused(name)))
        return {"id": name, "object": "model", "deleted": True}

    return app


async def _disconnected(request: Request) -> None:
    """Returns when the client has closed its connection (after the body, the next ASGI message
    is the disconnect; asking for it also makes uvicorn watch the socket)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


MAX_BODY = 16 << 20  # bytes: far above any real request, far below what would hurt


async def _body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"the body is {len(raw)} bytes; at most {MAX_BODY}")
    return raw


def _name_free(engine: Engine, name: str) -> None:
    if name == engine.base_name or name in engine.adapters.adapters:
        why = (
            "is being unloaded; try again when it is gone" if name in engine.closing else "is loaded already"
        )
        raise ApiError(409, f"an adapter named {name!r} {why}", "conflict_error")


def _inside(root: Path, path: str) -> Path:
    """`path` (relative to `root`, or absolute) if it lies under `root` once every '..' and
    symbolic link is resolved; else 403, and nothing is read."""
    try:
        base = root.resolve()
        target = (base / path).resolve()
        exists = target.is_dir()
    except (ValueError, OSError) as err:  # a NUL byte, a name too long, a loop of links
        raise ApiError(400, f"'path': not a usable path ({err})") from None
    if not target.is_relative_to(base):
        raise ApiError(
            403, f"{path} is outside --adapter-root; only adapters under it can be loaded", "permission_error"
        )
    if not exists:
        raise ApiError(404, f"{path}: no such run directory under --adapter-root", "not_found_error")
    return target


def _files_read(folder: Path) -> list[Path]:
    """What loading `folder` reads (found without reading any): a peft folder's files, or a run's
    resolved config and adapter/ folder (an adapter/ folder is read with its run, one level up)."""
    from peftrun.runs import ADAPTER, RESOLVED
    from peftrun.serving.peft_files import PEFT_CONFIG

    if (folder / PEFT_CONFIG).is_file():
        return [folder, *folder.iterdir()]
    run_dir = next((f for f in (folder, folder.parent) if (f / RESOLVED).is_file()), folder)
    adapter = run_dir / ADAPTER
    return [run_dir, run_dir / RESOLVED, adapter, *(adapter.iterdir() if adapter.is_dir() else [])]


def _load(engine: Engine, name: str, folder: Path, root: Path) -> None:
    """Add an adapter (on the engine's thread); if that fails half way, take off whatever it
    attached, so that nothing of it stays."""
    from peftrun.methods.lora import detach_lora, lora_layers

    _name_free(engine, name)  # again: another load of this name may have come first
    base = root.resolve()
    for path in _files_read(folder):
        if not path.resolve().is_relative_to(base):
            raise ApiError(403, f"{path} leads outside --adapter-root; nothing loaded", "permission_error")
    aset = engine.adapters
    model = aset.shared.model
    before = {id(layer) for layer in lora_layers(model)}
    try:
        aset.add(name, folder)
    except Exception:
        aset.adapters.pop(name, None)  # (the name was free: an entry under it is this load's)
        for owner in {layer.owner for layer in lora_layers(model) if id(layer) not in before}:
            detach_lora(model, owner)
        raise


def _model_card(engine: Engine, name: str | None, created: int) -> dict:
    card = {"id": name or engine.base_name, "object": "model", "created": created, "owned_by": "peftrun"}
    if name is None:
        return {**card, "kind": "base", "root": engine.base_name, "parent": None}
    adapter = engine.adapters.adapters[name]
    kind = adapter.cfg.method.kind if adapter.method is not None else "peft"
    return {
        **card,
        "kind": kind,
        "run": str(adapter.path),
        "root": engine.base_name,
        "parent": engine.base_name,
    }


def _chat_layout(engine: Engine, adapter: str | None, model: str) -> None:
    """400 unless the model's prompts are a chat template's (a run trained with data.format: chat)."""
    chosen = engine.adapters.adapters.get(adapter) if adapter else None
    cfg = chosen.cfg if chosen else engine.adapters.default_cfg
    if cfg.data.format != "chat":
        raise ApiError(
            400,
            f"model {model!r} was trained with data.format={cfg.data.format}, not chat: its prompts are no "
            "chat template's; send its sources to /v1/completions",
        )


def _completion(engine: Engine, body, adapter: str | None) -> Completion:
    """The request as the engine takes it, or 400 saying what does not fit."""
    aset = engine.adapters
    chosen = aset.adapters.get(adapter) if adapter else None
    decode = decode_settings(body, (chosen.cfg if chosen else aset.default_cfg).decode)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    rows = len(prompts) * body.n
    if rows > engine.max_queue:  # (before any tokenising: such a request can never be queued)
        raise ApiError(
            400,
            f"the request asks for {rows} outputs (prompts x n); the queue holds {engine.max_queue}",
        )
    positions, room = aset.shared.arch.max_positions, engine.room(adapter)
    limit = decode.max_new_tokens
    if limit > room:
        raise ApiError(
            400, f"'max_tokens': {limit} is more than the {room} positions {engine.base_name} has here"
        )
    widths = []
    for i, prompt in enumerate(prompts):
        which = "'prompt'" if len(prompts) == 1 else f"'prompt' {i}"
        source_tokens, width = engine.measure(adapter, prompt)
        if source_tokens > positions:
            raise ApiError(
                400, f"{which} is {source_tokens} tokens; {engine.base_name} holds {positions} positions"
            )
        if not aset.shared.arch.is_encoder_decoder and width + limit > room:
            raise ApiError(
                400,
                f"{which} ({width} tokens as the adapter's format writes it) and 'max_tokens' ({limit}) "
                f"need {width + limit} positions; {engine.base_name} holds {room} here: lower max_tokens",
            )
        widths.append(width)
    return Completion(
        adapter=adapter, prompts=prompts, n=body.n, decode=decode, stops=stops(body), seed=body.seed,
        stream=body.stream, emit=lambda event: None, max_tokens=limit, widths=widths,
    )  # fmt: skip


class _Answer:
    """Collects a request's events into OpenAI's completion objects."""

    def __init__(self, completion: Completion, body, cid: str, arrived: float, engine: Engine) -> None:
        self.completion, self.body, self.arrived = completion, body, arrived
        self.engine, self.metrics = engine, engine.metrics
        self.id = f"cmpl-{cid}"
        self.created = int(time.time())
        self.texts: dict[int, str] = {}
        self.reasons: dict[int, str] = {}
        self.tokens = 0
        self.streamed: dict[int, str] = {}
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or len(self.texts) == self.completion.choices

    def take(self, event: tuple) -> list[dict]:
        """Record an event; the stream chunks it makes."""
        if event[0] == "error":
            self.error = event[1]
            self._count("500")
            return []
        if event[0] == "delta":
            _, choice, text = event
            if not self.streamed and self.completion.stream:
                self.metrics.first_token.observe(time.perf_counter() - self.arrived)
            self.streamed[choice] = self.streamed.get(choice, "") + text
            return [self._chunk(choice, text, None)]
        _, choice, text, reason, count = event
        self.texts[choice], self.reasons[choice] = text, reason
        self.tokens += count
        if self.finished:
            self._count("200")
            self.engine.answered += 1
        sent = self.streamed.get(choice, "")
        rest = text[len(sent) :] if text.startswith(sent) else text  # (never: see engine._Watch)
        return [self._chunk(choice, rest, reason)]

    def _count(self, status: str) -> None:
        self.metrics.requests.labels(self.body.model, status).inc()
        self.metrics.latency.observe(time.perf_counter() - self.arrived)

    def _chunk(self, choice: int, text: str, reason: str | None) -> dict:
        return {
            "id": self.id, "object": "text_completion", "created": self.created, "model": self.body.model,
            "choices": [{"index": choice, "text": text, "logprobs": None, "finish_reason": reason}],
        }  # fmt: skip

    def usage(self) -> dict:
        prompt = self.completion.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": self.tokens,
            "total_tokens": prompt + self.tokens,
        }

    def whole(self) -> dict:
        choices = [
            {"index": i, "text": self.texts[i], "logprobs": None, "finish_reason": self.reasons[i]}
            for i in range(self.completion.choices)
        ]
        return {
            "id": self.id, "object": "text_completion", "created": self.created, "model": self.body.model,
            "choices": choices, "usage": self.usage(),
        }  # fmt: skip

    def usage_chunk(self) -> dict:
        return {**self._chunk(0, "", None), "choices": [], "usage": self.usage()}

    async def stream(self, queue: asyncio.Queue, engine: Engine):
        """Server-sent events: a chunk per piece of text, then [DONE]; a client that leaves
        cancels its rows."""
        try:
            while not self.finished:
                for chunk in self.take(await queue.get()):
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            if self.error:
                yield f"data: {json.dumps({'error': {'message': self.error, 'type': 'server_error'}})}\n\n"
            elif self.body.stream_options and self.body.stream_options.include_usage:
                yield f"data: {json.dumps(self.usage_chunk())}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            if not self.finished:
                engine.cancel(self.completion)


class _ChatAnswer(_Answer):
    """A chat completion: choices[].message, and streamed chunks with choices[].delta."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.id = "chatcmpl-" + self.id.removeprefix("cmpl-")
        self.opened: set[int] = set()  # choices whose first chunk (with the role) went out

    def _chunk(self, choice: int, text: str, reason: str | None) -> dict:
        delta = {"content": text} if text or reason is None else {}
        if choice not in self.opened:
            self.opened.add(choice)
            delta = {"role": "assistant", "content": text}
        return {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.body.model,
            "choices": [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": reason}],
        }  # fmt: skip

    def usage_chunk(self) -> dict:
        return {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.body.model,
            "choices": [], "usage": self.usage(),
        }  # fmt: skip

    def whole(self) -> dict:
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": self.texts[i]},
                "logprobs": None,
                "finish_reason": self.reasons[i],
            }
            for i in range(self.completion.choices)
        ]
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.body.model,
            "choices": choices, "usage": self.usage(),
        }  # fmt: skip


def serve(
    adapters: list[tuple[str, Path]],
    base: str | None,
    settings: ServeSettings,
    max_batch: int = 16,
    max_queue: int = 256,
    mixing: bool = True,
    device: str = "auto",
    echo=None,
) -> None:
    """Load the base and the adapters, then serve until SIGINT/SIGTERM (which finish what is in
    flight first)."""
    import uvicorn

    from peftrun.serving.adapters import AdapterSet
    from peftrun.serving.metrics import ServeMetrics

    echo = echo or (lambda message: print(message, file=sys.stderr, flush=True))
    aset = AdapterSet(base, device)
    for name, path in adapters:
        aset.add(name, path)
    if aset.shared is None:
        if base is None:
            raise PeftrunError(
                "give --adapter NAME=RUN_DIR (one or more), or --base MODEL to serve the base alone"
            )
        from peftrun.config import Config, ModelConfig

        aset._load_base(Config(model=ModelConfig(name=base)))
    engine = Engine(aset, ServeMetrics(), max_rows=max_batch, max_queue=max_queue, mixing=mixing)
    app = create_app(engine, settings)
    listed = ", ".join(
        f"{n} ({_model_card(engine, n, 0)['kind']}, {aset.adapters[n].path})" for n in engine.names()
    )
    echo(f"peftrun serve: base {engine.base_name} on {aset.device}; adapters: {listed or 'none'}")
    if settings.adapter_root is not None:
        echo(f"adapters can be loaded at run time from under {settings.adapter_root.resolve()}")
    if settings.host not in ("127.0.0.1", "localhost", "::1") and settings.api_key is None:
        echo(f"warning: listening on {settings.host} without --api-key-file: whoever reaches it can use it")

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                port = self.servers[0].sockets[0].getsockname()[1]
                echo(f"listening on http://{settings.host}:{port}  (OpenAI API at /v1; Ctrl-C/SIGTERM stops)")

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again with the
    # handlers it found in place: these make that a no-op, so a clean stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: None)
    Server(config).run()
    left = f", {engine.left} left by their clients" if engine.left else ""
    echo(f"peftrun serve: stopped; {engine.answered} of {engine.accepted} accepted requests answered{left}")

"""The batching engine behind `peftrun serve`: one thread owns the model and decodes the rows of
waiting requests in mixed batches (written by hand: no serving library batches prefixes or
soft prompts, and this is all the scheduling a frozen base with per-row adapters needs).

A request's rows (its prompts × n) wait in one FIFO queue. Greedy and unseeded sampled rows on a
decoder-only shared base are batched continuously (peftrun.serving.live): they join the running
batch at any token while they are the oldest waiting, up to `max_rows`, and leave it as soon as
they end, each with its own prefix/prompt/LoRA, positions, settings and limits; a row's output is
the one it gets alone (batch-invariant). Other rows (beam search, seeded sampling, adapters with a
model of their own, encoder-decoder bases) are decoded a batch at a time: at a batch boundary the
engine takes the oldest row and every other waiting row that can share its generate() call (the
same decoding settings), up to `max_rows`; greedy and sampled rows there may ask for different
`max_tokens` and stop strings (an HF stopping criterion per row). A sampled request with a seed is
decoded in a batch of its own, so that its seed alone decides its outputs.

Loading and unloading adapters run on the engine's thread between batches (they change the
shared model); an adapter being unloaded takes no new requests and is dropped once none of its
rows waits or decodes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from peftrun.errors import PeftrunError
from peftrun.serving.adapters import AdapterSet, source_text
from peftrun.serving.metrics import ServeMetrics

# Decoding settings that do not change what a row generates (and so never split a batch).
_NOT_BATCH_SETTINGS = ("splits", "limit", "batch_size")


class QueueFull(PeftrunError):
    """More rows are waiting than the server holds; the client should come back later."""


class UnknownAdapter(PeftrunError):
    """A request named an adapter that is not loaded (or is being unloaded)."""


class EngineBroken(PeftrunError):
    """The engine's thread failed; the server answers 503 until it is restarted."""


@dataclass
class Completion:
    """One request: its prompts (sources as the dataset holds them), n outputs each, decoded with
    `decode` (a DecodeConfig); `emit(event)` gets its events, from the engine's thread:
    ("delta", choice, text) while it streams, ("done", choice, text, finish_reason, tokens) once
    per choice, ("error", message) if the batch fails."""

    adapter: str | None
    prompts: list[str]
    n: int
    decode: object
    stops: tuple[str, ...]
    seed: int | None
    stream: bool
    emit: Callable[[tuple], None]
    max_tokens: int = 0
    cancelled: bool = False
    created: float = field(default_factory=time.monotonic)
    widths: list[int] = field(default_factory=list)  # each prompt's tokens, as its format writes it

    @property
    def prompt_tokens(self) -> int:
        return sum(self.widths) * self.n

    @property
    def choices(self) -> int:
        return len(self.prompts) * self.n


@dataclass
class _Row:
    request: Completion
    choice: int
    source: str
    key: str
    width: int  # prompt tokens
    emitted: str = ""  # text streamed so far
    tokens: int = 0
    stopped: bool = False  # ended by its max_tokens or a stop string, or cancelled
    live: bool = False  # decoded by continuous batching (peftrun.serving.live)


class Engine:
    """Decodes `Completion`s in mixed batches on its own thread (see the module docstring)."""

    def __init__(
        self,
        adapters: AdapterSet,
        metrics: ServeMetrics,
        max_rows: int = 16,
        max_queue: int = 256,
        mixing: bool = True,
        continuous: bool = True,
    ) -> None:
        self.adapters = adapters
        self.continuous = continuous  # False: every batch is one generate() call (as before)
        self.metrics = metrics
        self.max_rows = max_rows
        self.max_queue = max_queue
        self.mixing = mixing
        self.closing: set[str] = set()  # adapters being unloaded: no new requests
        self._rows: deque[_Row] = deque()
        self._running: list[_Row] = []
        self._commands: list[tuple[Callable[[], bool], Callable[[], object], Future]] = []
        self._wake = threading.Condition()
        self._stop = False
        self.accepted = 0  # requests queued (submit), and those answered whole (the server counts)
        self.answered = 0
        self.left = 0  # requests whose client went away before the answer
        self.broken: str | None = None  # why the engine's thread stopped, if it failed
        self._thread = threading.Thread(target=self._loop, name="peftrun-engine", daemon=True)

    # The server's side (any thread) -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join()

    def names(self) -> list[str]:
        return [name for name in self.adapters.adapters if name not in self.closing]

    def check_adapter(self, name: str | None) -> None:
        if name is not None and (name not in self.adapters.adapters or name in self.closing):
            loaded = ", ".join([self.base_name, *self.names()])
            raise UnknownAdapter(f"model {name!r} is not loaded here; loaded: {loaded}")

    @property
    def base_name(self) -> str:
        return self.adapters.shared.name

    def submit(self, request: Completion) -> None:
        """Queue a request's rows, or refuse it (QueueFull, UnknownAdapter) with nothing queued."""
        with self._wake:
            if self.broken:
                raise EngineBroken(self.broken)
            self.check_adapter(request.adapter)
            if len(self._rows) + request.choices > self.max_queue:
                raise QueueFull(
                    f"the queue is full ({len(self._rows)} rows wait, at most {self.max_queue}); retry later"
                )
            key = self._batch_key(request)
            live = self._live(request)
            for p, (prompt, width) in enumerate(zip(request.prompts, request.widths, strict=True)):
                for j in range(request.n):
                    self._rows.append(_Row(request, p * request.n + j, prompt, key, width, live=live))
            self.metrics.queue_rows.set(len(self._rows))
            self.accepted += 1
            self._wake.notify()

    def cancel(self, request: Completion) -> None:
        """The client went away: drop its waiting rows; its decoding rows end at the next token."""
        with self._wake:
            self.left += not request.cancelled
            request.cancelled = True
            self._rows = deque(row for row in self._rows if row.request is not request)
            self.metrics.queue_rows.set(len(self._rows))

    def call(self, action: Callable[[], object], ready: Callable[[], bool] = lambda: True) -> Future:
        """Run `action` on the engine's thread at the first batch boundary where `ready()` holds."""
        future: Future = Future()
        with self._wake:
            self._commands.append((ready, action, future))
            self._wake.notify()
        return future

    def unused(self, name: str) -> bool:
        """No row of adapter `name` waits or decodes (call with the lock held, or on the engine)."""
        return not any(row.request.adapter == name for row in (*self._rows, *self._running))

    def measure(self, adapter: str | None, prompt: str) -> tuple[int, int]:
        """(tokens of the source itself, tokens of the prompt its token format writes (what the
        model reads: truncated, with the format's room and separators))."""
        chosen = self.adapters.adapters.get(adapter) if adapter else None
        cfg = chosen.cfg if chosen else self.adapters.default_cfg
        text_format = chosen.format if chosen else self.adapters.base_format()
        source = source_text(cfg.data, prompt)
        tokens = self.adapters.shared.tokenizer(source, add_special_tokens=False)["input_ids"]
        return len(tokens), len(text_format.prompt_ids(source))

    def room(self, adapter: str | None) -> int:
        """Positions a decoder-only prompt and its new tokens share (for an encoder-decoder: the
        decoder's own, for the new tokens alone)."""
        chosen = self.adapters.adapters.get(adapter) if adapter else None
        text_format = chosen.format if chosen else self.adapters.base_format()
        if self.adapters.shared.arch.is_encoder_decoder:
            return self.adapters.shared.arch.max_positions
        return text_format.max_positions

    # The engine's thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._serve()
        except Exception as err:  # never leave requests waiting on a dead thread
            import traceback

            traceback.print_exc()
            self._fail_everything(f"the decoding engine stopped: {type(err).__name__}: {err}")

    def _fail_everything(self, message: str) -> None:
        with self._wake:
            self.broken = message
            rows, self._rows, self._running = [*self._running, *self._rows], deque(), []
            commands, self._commands = self._commands, []
        for request in {id(row.request): row.request for row in rows}.values():
            request.emit(("error", message))
        for _, _, future in commands:
            future.set_exception(EngineBroken(message))

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._rows and not self._ready_commands() and not self._stop:
                    self._wake.wait(timeout=0.5)
                commands = self._ready_commands()
                for command in commands:
                    self._commands.remove(command)
                if not commands and not self._rows and self._stop:
                    return
                batch = self._take_batch() if not commands else []
            for _, action, future in commands:
                try:
                    future.set_result(action())
                except Exception as err:  # reported to the caller that asked for it
                    future.set_exception(err)
            if batch and batch[0].live:
                self._run_live(batch)
            elif batch:
                self._decode(batch)

    def _ready_commands(self):
        return [command for command in self._commands if command[0]()]

    def _take_batch(self) -> list[_Row]:
        """The oldest row and the waiting rows that can share its batch (lock held). A decoder-only
        batch pads every prompt to the longest and runs to the longest limit, within the positions
        of its row with the least room (a prefix or soft prompt holds some: `decode_batch` caps
        every row's new tokens by that row's): a row joins only if all of that still fits its own
        room and every row's already in, so no row's new tokens are ever cut short by its batch."""
        first = self._rows[0]
        decoder_only = not self.adapters.shared.arch.is_encoder_decoder
        batch, rest = [], deque()
        width = limit = 0
        room = 1 << 30  # the least room of the rows taken so far
        for row in self._rows:
            own = self.room(row.request.adapter)
            needs = max(width, row.width) + max(limit, row.request.max_tokens)
            fits = not decoder_only or first.live or needs <= min(room, own)
            if len(batch) < self.max_rows and row.key == first.key and (fits or not batch):
                batch.append(row)
                width, limit = max(width, row.width), max(limit, row.request.max_tokens)
                room = min(room, own)
            else:
                rest.append(row)
        self._rows = rest
        self._running = batch
        self.metrics.queue_rows.set(len(self._rows))
        return batch

    def _live(self, request: Completion) -> bool:
        """Whether a request's rows join the running batch at any token (continuous batching):
        greedy or unseeded sampled rows on a decoder-only shared base. Beam search, seeded
        sampling, encoder-decoder bases and adapters with a model of their own decode a batch at a
        time (one generate() call)."""
        adapter = self.adapters.adapters.get(request.adapter) if request.adapter else None
        return (
            self.continuous
            and not self.adapters.shared.arch.is_encoder_decoder
            and (adapter is None or adapter.shared)
            and request.decode.num_beams == 1
            and not (request.seed is not None and request.decode.do_sample)
        )

    def _batch_key(self, request: Completion) -> str:
        """Rows with equal keys can share one generate() call (or, continuous batching, one
        running batch: every row there decodes with its own settings)."""
        adapter = self.adapters.adapters.get(request.adapter) if request.adapter else None
        if self._live(request):
            return json.dumps(["live", None if self.mixing else request.adapter])
        settings = request.decode.model_dump(mode="json")
        for name in _NOT_BATCH_SETTINGS:
            settings.pop(name)
        if settings["num_beams"] == 1:
            settings.pop("max_new_tokens")  # each row stops at its own limit (see _Watch)
        where = "shared" if adapter is None or adapter.shared else f"own:{adapter.name}"
        if not self.mixing:  # the benchmark's "one adapter at a time"
            where += f"/{request.adapter}"
        if request.seed is not None and request.decode.do_sample:
            where += f"/seeded:{id(request)}"
        return json.dumps([where, settings], sort_keys=True)

    def _run_live(self, batch: list[_Row]) -> None:
        """Continuous batching (peftrun.serving.live): rows of the batch's key join at every
        token while they are the oldest waiting (another kind of row or a load/unload waiting
        ends admission, and the batch drains); each row is answered as soon as it ends."""
        import torch

        from peftrun.serving.live import LiveBatch

        aset = self.adapters
        running = LiveBatch(aset.shared.model, aset.shared.tokenizer, aset.device, self.max_rows)
        key, pending = batch[0].key, batch
        try:
            while True:
                if pending:
                    running.join([self._live_row(row) for row in pending if not row.request.cancelled])
                    pending = []
                self._settle(running)
                with self._wake:
                    pending = self._admit(key, len(running.rows))
                    self._running = [live.row for live in running.rows] + pending
                    if not running.rows and not pending:
                        self._running = []
                        return
                if running.rows:
                    rows = len(running.rows)
                    adapters = len({live.row.request.adapter for live in running.rows})
                    started = time.perf_counter()
                    running.step()
                    self.metrics.observe_batch(rows, adapters, rows, time.perf_counter() - started)
        except Exception as err:  # a failed batch answers its requests, and the server goes on
            message = f"decoding failed: {type(err).__name__}: {err}"
            rows = [live.row for live in running.rows] + [live.row for live in running.ended] + pending
            for request in {id(row.request): row.request for row in rows}.values():
                request.emit(("error", message))
            self.metrics.batch_failures.inc()
            with self._wake:
                self._running = []
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _admit(self, key: str, running: int) -> list[_Row]:
        """The waiting rows that join the running batch now (lock held): the oldest, while they
        have its key and there is room; none while a load or unload waits."""
        taken: list[_Row] = []
        if self._ready_commands():
            return taken
        while self._rows and self._rows[0].key == key and running + len(taken) < self.max_rows:
            taken.append(self._rows.popleft())
        if taken:
            self.metrics.queue_rows.set(len(self._rows))
        return taken

    def _live_row(self, row: _Row):
        from peftrun.serving.live import LiveRow

        aset = self.adapters
        adapter = aset.adapters.get(row.request.adapter) if row.request.adapter else None
        text_format = adapter.format if adapter else aset.base_format()
        cfg = adapter.cfg if adapter else aset.default_cfg
        prompt = text_format.prompt_ids(source_text(cfg.data, row.source))
        limit = max(1, min(row.request.max_tokens, text_format.max_positions - len(prompt)))
        return LiveRow(row, adapter.rows if adapter else None, prompt, limit, row.request.decode)

    def _settle(self, running) -> None:
        """After a token: end rows at a stop string or a cancel, stream what is final, and answer
        every row that ended."""
        from peftrun.decode import output_text

        tokenizer = running.tokenizer
        for live in running.rows:
            row, request = live.row, live.row.request
            if request.cancelled:
                live.done = live.done or "cancelled"
                continue
            if not (request.stream or request.stops) or live.done is not None:
                continue
            text = output_text(tokenizer, live.generated)
            if _first_stop(text, request.stops) is not None:
                live.done = "stop"
            elif request.stream:
                settled = _settled(text, request.stops)
                if len(settled) > len(row.emitted) and settled.startswith(row.emitted):
                    request.emit(("delta", row.choice, settled[len(row.emitted) :]))
                    row.emitted = settled
        for live in running.finished():
            row, request = live.row, live.row.request
            if request.cancelled:
                continue
            text = output_text(tokenizer, live.generated)
            cut = _first_stop(text, request.stops)
            reason = "stop" if cut is not None else live.done
            text = text if cut is None else text[:cut]
            request.emit(("done", row.choice, text, reason, len(live.generated)))

    def _decode(self, batch: list[_Row]) -> None:
        import torch

        started = time.perf_counter()
        try:
            texts, tokens, reasons = self._generate(batch)
        except Exception as err:  # a failed batch answers its requests, and the server goes on
            message = f"decoding failed: {type(err).__name__}: {err}"
            for request in {id(row.request): row.request for row in batch}.values():
                request.emit(("error", message))
            self.metrics.batch_failures.inc()
        else:
            seconds = time.perf_counter() - started
            self.metrics.observe_batch(
                len(batch), len({row.request.adapter for row in batch}), sum(tokens), seconds
            )
            for row, text, count, reason in zip(batch, texts, tokens, reasons, strict=True):
                row.request.emit(("done", row.choice, text, reason, count))
        finally:
            with self._wake:
                self._running = []
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _generate(self, batch: list[_Row]) -> tuple[list[str], list[int], list[str]]:
        import torch
        from transformers import StoppingCriteriaList

        from peftrun.decode import decode_batch, generation_config, output_text

        first = batch[0].request
        aset = self.adapters
        chosen = [aset.adapters.get(row.request.adapter) if row.request.adapter else None for row in batch]
        formats = [a.format if a else aset.base_format() for a in chosen]
        cfgs = [a.cfg if a else aset.default_cfg for a in chosen]
        sources = [source_text(cfg.data, row.source) for cfg, row in zip(cfgs, batch, strict=True)]
        decode_cfg = first.decode
        limits = [row.request.max_tokens for row in batch]
        if decode_cfg.num_beams == 1:
            decode_cfg = decode_cfg.model_copy(update={"max_new_tokens": max(limits)})
        tokenizer = formats[0].tokenizer
        gen_cfg = generation_config(decode_cfg, tokenizer, aset.shared.model.config)
        if decode_cfg.num_beams == 1:

            def watch(prompt):
                return StoppingCriteriaList([_Watch(batch, formats[0], tokenizer, prompt)])

        else:  # beams of a row cannot end apart from the others: stop when every client has left

            def watch(prompt):
                return StoppingCriteriaList([_AllLeft(batch)])

        if first.seed is not None and decode_cfg.do_sample:
            torch.manual_seed(first.seed)
        if chosen[0] is not None and not chosen[0].shared:
            model, context = chosen[0].model, chosen[0].method.active(len(batch))
        else:
            from peftrun.methods.inject.rows import active_rows

            model = aset.shared.model
            context = active_rows(model, [a.rows if a else None for a in chosen])
        with context:
            generated = decode_batch(model, formats, sources, gen_cfg, aset.device, watch)
        texts, tokens, reasons = [], [], []
        for row, ids, limit in zip(batch, generated, limits, strict=True):
            ids = ids[:limit]
            text = output_text(tokenizer, ids)
            cut = _first_stop(text, row.request.stops)
            reason = "stop" if cut is not None or len(ids) < limit else "length"
            texts.append(text if cut is None else text[:cut])
            tokens.append(row.tokens if row.stopped else len(ids))
            reasons.append(reason)
        return texts, tokens, reasons


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return min(found) if found else None


class _Watch:
    """An HF stopping criterion over a greedy or sampled batch, called after every token: ends
    each row at its own max_tokens, at a stop string or when its client left, and streams the
    text each streaming row has added. A row's text is streamed only as far as it is final (no
    trailing space or half a character, nothing that may yet become a stop string), so the
    streamed pieces add up to exactly the non-streamed output."""

    def __init__(self, batch: list[_Row], text_format, tokenizer, prompt: dict) -> None:
        self.batch = batch
        self.format = text_format
        self.tokenizer = tokenizer
        self.prompt = prompt

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        from peftrun.decode import output_text

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for r, (row, ids) in enumerate(
            zip(self.batch, self.format.generated_ids(input_ids, self.prompt), strict=True)
        ):
            request = row.request
            if row.stopped or request.cancelled:
                done[r] = True
                continue
            text = output_text(self.tokenizer, ids) if (request.stream or request.stops) else ""
            if len(ids) >= request.max_tokens or _first_stop(text, request.stops) is not None:
                row.stopped = done[r] = True
                row.tokens = min(len(ids), request.max_tokens)
                continue
            if request.stream:
                settled = _settled(text, request.stops)
                if len(settled) > len(row.emitted) and settled.startswith(row.emitted):
                    request.emit(("delta", row.choice, settled[len(row.emitted) :]))
                    row.emitted = settled
        return done


class _AllLeft:
    """An HF stopping criterion for beam search: stop the batch once every request left."""

    def __init__(self, batch: list[_Row]) -> None:
        self.requests = [row.request for row in batch]

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        left = all(request.cancelled for request in self.requests)
        return torch.full((input_ids.shape[0],), left, dtype=torch.bool, device=input_ids.device)


def _settled(text: str, stops: tuple[str, ...]) -> str:
    """The part of a row's text so far that no later token can change: without trailing
    whitespace (stripped from a finished output), a half-decoded character, or an ending that
    may be the start of a stop string."""
    text = text.rstrip().rstrip("\ufffd").rstrip()
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                text = text[:-k]
                break
    return text

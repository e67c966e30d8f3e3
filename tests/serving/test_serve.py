"""`peftrun serve` against a live server on 127.0.0.1, with OpenAI's own client and raw HTTP:
every endpoint; greedy outputs equal `peftrun generate`'s byte for byte whatever shares the
batch (8 clients x 25 requests over 4 adapters of different kinds and the base); streaming equals
non-streaming; adapters loaded and unloaded under traffic; SIGTERM under traffic answers every
accepted request; each bad input gets its status and one clear message."""

from __future__ import annotations

import json
import random
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import openai
import pytest
from serve_helpers import SOURCES, LiveServer, make_run

from peftrun.serving import generate as generating

KINDS = ["prefix", "prompt", "lora", "ptuning"]
BASE = "tiny-gpt2"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    made = {kind: make_run(root / kind, BASE, kind, seed=101 + i) for i, kind in enumerate(KINDS)}
    made["embedding"] = make_run(root / "embedding", BASE, "embedding", seed=201)
    made["llama"] = make_run(root / "llama", "tiny-llama", "prefix")
    outside = tmp_path_factory.mktemp("outside")
    made["outside"] = make_run(outside / "lora", BASE, "lora", seed=301)
    (root / "link").symlink_to(made["outside"])
    made["root"] = root
    return made


def generate_reference(runs, rows, tmp_path, overrides=()) -> list[str]:
    """What `peftrun generate` writes for (adapter name or None, source) rows, with the same
    adapters loaded."""
    names = sorted({name for name, _ in rows if name is not None})
    lines = [json.dumps({"id": i, "adapter": name, "input": source}) for i, (name, source) in enumerate(rows)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    adapters = [(name, runs[name]) for name in names] or [("prefix", runs["prefix"])]
    quiet = lambda message: None  # noqa: E731
    generating.run(
        adapters,
        str(tmp_path / "in.jsonl"),
        str(tmp_path / "out.jsonl"),
        overrides=list(overrides),
        echo=quiet,
    )
    return [json.loads(line)["output"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def server(runs):
    live = LiveServer(*(a for kind in KINDS for a in ("--adapter", f"{kind}={runs[kind]}")),
                      "--adapter-root", str(runs["root"]))  # fmt: skip
    yield live
    assert live.stop() == 0, "\n".join(live.lines)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_base_and_every_adapter_with_its_kind_and_run(server, runs):
    models = {m.id: m for m in openai.OpenAI(base_url=server.v1, api_key="x").models.list()}
    assert list(models) == [BASE, *KINDS]
    assert models[BASE].model_extra["kind"] == "base"
    for kind in KINDS:
        assert models[kind].model_extra["kind"] == kind
        assert models[kind].model_extra["run"] == str(runs[kind])
        assert models[kind].model_extra["parent"] == BASE


def test_start_up_says_what_was_loaded_and_where_it_listens(server, runs):
    first = server.lines[0]
    assert first.startswith(f"peftrun serve: base {BASE} on cpu; adapters: prefix (prefix, {runs['prefix']})")
    assert any(line.startswith("listening on http://127.0.0.1:") for line in server.lines)


def test_health_and_metrics(server):
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    missing = httpx.get(f"{server.url}/v1/nothing")  # FastAPI's own refusals in OpenAI's shape too
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Not Found"
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "peftrun_queue_rows",
        "peftrun_batch_rows_bucket",
        "peftrun_batch_adapters_bucket",
        "peftrun_tokens_per_second",
        "peftrun_request_seconds_bucket",
        "peftrun_generated_tokens_total",
    ):
        assert name in text  # fmt: skip


def test_each_adapter_and_the_base_give_what_peftrun_generate_gives(client, runs, tmp_path):
    rows = [(name, source) for name in [*KINDS, None] for source in SOURCES]
    expected = generate_reference(runs, rows, tmp_path)
    got = []
    for name, source in rows:
        answer = client.completions.create(model=name or BASE, prompt=source)
        assert answer.choices[0].finish_reason == "length"  # EOS banned: max_new_tokens (10) binds
        assert answer.usage.completion_tokens == 10
        got.append(answer.choices[0].text)
    assert got == expected
    per_adapter = [tuple(got[i : i + len(SOURCES)]) for i in range(0, len(got), len(SOURCES))]
    assert len(set(per_adapter)) == len(per_adapter), "every adapter (and the base) writes differently"


def test_eight_clients_25_requests_each_over_4_adapters_and_the_base(server, client, runs, tmp_path):
    """Whatever shares its batch, every output is `peftrun generate`'s; no request fails; and
    batches did mix adapters."""
    names = [*KINDS, None]
    rng = random.Random(0)
    plan = [[(rng.choice(names), rng.choice(SOURCES)) for _ in range(25)] for _ in range(8)]
    every = [row for rows in plan for row in rows]
    expected = dict(zip(every, generate_reference(runs, every, tmp_path), strict=True))
    before = _histogram(server, "peftrun_batch_adapters")

    def one_client(rows):
        own = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=300)
        return [
            own.completions.create(model=name or BASE, prompt=source).choices[0].text for name, source in rows
        ]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one_client, plan))
    for rows, texts in zip(plan, answers, strict=True):
        assert texts == [expected[row] for row in rows]
    after = _histogram(server, "peftrun_batch_adapters")
    batches, adapters = after[1] - before[1], after[0] - before[0]
    # Continuous batching observes each decoding step as a batch: 200 requests x 10 tokens, one
    # row each, would be 2000 steps (plus the prefills' first tokens).
    assert batches < 1000, "requests were batched together"
    assert adapters > batches, "some batch held rows of several adapters"


def _histogram(server, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram."""
    values = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        for part in ("_sum", "_count"):
            if line.startswith(name + part + " "):
                values[part] = float(line.split()[-1])
    return values["_sum"], values["_count"]


def test_streaming_equals_non_streaming(client):
    """Also with stop strings cut from the middle of the output (a stop's first tokens must not be
    streamed before it is known whether the stop follows)."""
    stopped = 0
    for model in [*KINDS, BASE]:
        words = client.completions.create(model=model, prompt=SOURCES[0]).choices[0].text.split()
        middle = words[len(words) // 2][1:] or words[0]  # part of a word: the tokens before it stream
        for extra in ({}, {"n": 2, "stop": [" the", middle]}, {"max_tokens": 4}):
            whole = client.completions.create(model=model, prompt=SOURCES[:2], **extra)
            pieces: dict[int, str] = {}
            reasons = {}
            for chunk in client.completions.create(model=model, prompt=SOURCES[:2], stream=True, **extra):
                for choice in chunk.choices:
                    pieces[choice.index] = pieces.get(choice.index, "") + choice.text
                    if choice.finish_reason:
                        reasons[choice.index] = choice.finish_reason
            assert [pieces[c.index] for c in whole.choices] == [c.text for c in whole.choices]
            assert [reasons[c.index] for c in whole.choices] == [c.finish_reason for c in whole.choices]
            stopped += sum(c.finish_reason == "stop" for c in whole.choices)
    assert stopped >= 5, "the stop strings were met"


def test_a_stream_arrives_in_pieces_and_ends_with_usage_and_done(server):
    body = {
        "model": "prefix",
        "prompt": SOURCES[0],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{server.v1}/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert json.loads(json.dumps(chunks[-1]))["usage"]["completion_tokens"] == 10
    texts = [c["choices"][0]["text"] for c in chunks[:-1]]
    assert sum(1 for t in texts if t) > 1, "text came in several pieces"


def test_max_tokens_and_stop_strings_equal_the_generate_output_cut(client, runs, tmp_path):
    rows = [("lora", s) for s in SOURCES]
    short = generate_reference(runs, rows, tmp_path, ["decode.max_new_tokens=3"])
    answer = client.completions.create(model="lora", prompt=SOURCES, max_tokens=3)
    assert [c.text for c in answer.choices] == short
    assert {c.finish_reason for c in answer.choices} == {"length"}
    full = generate_reference(runs, rows, tmp_path)
    stop = full[0].split()[2]  # a word in the middle of the first output
    answer = client.completions.create(model="lora", prompt=SOURCES, stop=[stop])
    for choice, text in zip(answer.choices, full, strict=True):
        cut = text.find(stop)
        assert choice.text == (text if cut < 0 else text[:cut])
        assert choice.finish_reason == ("length" if cut < 0 else "stop")


def test_temperature_0_is_greedy_and_a_seed_repeats_a_sample(client):
    greedy = client.completions.create(model="prompt", prompt=SOURCES[0])
    assert client.completions.create(model="prompt", prompt=SOURCES[0], temperature=0).choices[0].text == (
        greedy.choices[0].text
    )
    sampled = [
        client.completions.create(model="prompt", prompt=SOURCES[0], temperature=1.0, seed=7, n=3)
        for _ in range(2)
    ]
    assert [c.text for c in sampled[0].choices] == [c.text for c in sampled[1].choices]
    assert len({c.text for c in sampled[0].choices}) > 1, "n samples differ"
    other = client.completions.create(model="prompt", prompt=SOURCES[0], temperature=1.0, seed=8, n=3)
    assert [c.text for c in other.choices] != [c.text for c in sampled[0].choices]


BAD = [
    # (body or raw bytes, status, words the message must hold)
    (
        {"model": "nope", "prompt": "x"},
        404,
        ["'nope' is not loaded", "tiny-gpt2, prefix, prompt, lora, ptuning"],
    ),
    (b'{"model": "prefix", "prompt": ', 400, ["not valid JSON"]),
    (b"[1, 2]", 400, ["must be a JSON object"]),
    ({"model": "prefix"}, 400, ["'prompt' is required"]),
    ({"model": "prefix", "prompt": 3}, 400, ["'prompt' must be a string or a list of strings"]),
    ({"model": "prefix", "prompt": []}, 400, ["empty list"]),
    (
        {"model": "prefix", "prompt": "x", "max_tokens": 0},
        400,
        ["'max_tokens'", "greater than or equal to 1"],
    ),
    ({"model": "prefix", "prompt": "x", "max_tokens": "5"}, 400, ["'max_tokens'", "integer"]),
    (
        {"model": "prefix", "prompt": "x", "max_tokens": 100000},
        400,
        ["100000 is more than the 509 positions tiny-gpt2 has here"],
    ),
    (
        {"model": "prefix", "prompt": SOURCES[0], "max_tokens": 505},
        400,
        ["and 'max_tokens' (505) need", "lower"],
    ),
    ({"model": "prefix", "prompt": "x", "seed": -1}, 400, ["'seed'"]),
    ({"model": "prefix", "prompt": "x", "temperature": 0, "num_beams": 3}, 400, ["ask for one"]),
    (
        {"model": "prefix", "prompt": f"name[{'word ' * 600}]"},
        400,
        ["'prompt' is", "tokens; tiny-gpt2 holds 512 positions"],
    ),
    (
        {"model": "prefix", "prompt": "a table without brackets"},
        400,
        ["malformed E2E MR 'a table without brackets'"],
    ),
    (
        {"model": "prefix", "prompt": "x", "max_token": 5},
        400,
        ["unknown field 'max_token'", "did you mean 'max_tokens'"],
    ),
    ({"model": "prefix", "prompt": "x", "logprobs": 2}, 400, ["'logprobs' is not supported"]),
    ({"model": "prefix", "prompt": "x", "temperature": -1}, 400, ["'temperature'"]),
    ({"model": "prefix", "prompt": "x", "stop": [""]}, 400, ["'stop' holds an empty string"]),
    ({"model": "prefix", "prompt": "x", "temperature": 0.5, "num_beams": 3}, 400, ["ask for one"]),
]


@pytest.mark.parametrize("body, status, words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_requests_get_their_status_and_one_clear_message(server, body, status, words):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        f"{server.v1}/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    message = response.json()["error"]["message"]
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_the_openai_client_sees_404_for_an_unknown_adapter_never_a_fallback(client):
    with pytest.raises(openai.NotFoundError, match="not loaded here"):
        client.completions.create(model="prefx", prompt=SOURCES[0])


def test_adapters_load_and_unload_under_traffic(server, client, runs, tmp_path):
    rows = [("embedding", s) for s in SOURCES]
    stop = threading.Event()
    failures, answered = [], []

    def traffic():  # the loaded adapters keep answering while another comes and goes
        own = openai.OpenAI(base_url=server.v1, api_key="x", max_retries=0, timeout=120)
        while not stop.is_set():
            try:
                answered.append(own.completions.create(model="lora", prompt=SOURCES[1]).choices[0].text)
            except Exception as err:  # noqa: BLE001 - any failure is the finding
                failures.append(err)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        loaded = httpx.post(
            f"{server.v1}/adapters", json={"name": "embedding", "path": "embedding/run"}, timeout=60
        )
        assert loaded.status_code == 201, loaded.text
        assert loaded.json()["kind"] == "prefix"
        got = [client.completions.create(model="embedding", prompt=s).choices[0].text for s in SOURCES]
        expected = generate_reference({**runs, "embedding": runs["embedding"]}, rows, tmp_path)
        assert got == expected
        taken = httpx.post(f"{server.v1}/adapters", json={"name": "embedding", "path": "embedding/run"})
        assert taken.status_code == 409
        # Requests accepted when the unload comes are answered; new ones get 404. A streamed
        # request is accepted (queued) once its response headers arrive.
        with httpx.Client(timeout=60) as http, ExitStack() as streams:
            body = {"model": "embedding", "stream": True}
            url = f"{server.v1}/completions"
            opened = [
                streams.enter_context(http.stream("POST", url, json={**body, "prompt": s})) for s in SOURCES
            ]
            assert [r.status_code for r in opened] == [200] * len(SOURCES)
            deleted = httpx.delete(f"{server.v1}/adapters/embedding", timeout=60)
            assert [_streamed_text(r) for r in opened] == expected
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert "embedding" not in [m.id for m in client.models.list()]
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="embedding", prompt=SOURCES[0])
        assert httpx.delete(f"{server.v1}/adapters/embedding").status_code == 404
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert answered and set(answered) == {generate_reference(runs, [("lora", SOURCES[1])], tmp_path)[0]}


def _streamed_text(response) -> str:
    chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    return "".join(chunk["choices"][0]["text"] for chunk in chunks if chunk["choices"])


def test_an_unloaded_lora_leaves_the_base_and_the_other_adapters_as_they_were(server, client, runs, tmp_path):
    before = [client.completions.create(model=m, prompt=SOURCES[0]).choices[0].text for m in [BASE, "lora"]]
    loaded = httpx.post(f"{server.v1}/adapters", json={"name": "lora2", "path": "embedding/../lora/run"})
    assert loaded.status_code == 201, loaded.text
    assert client.completions.create(model="lora2", prompt=SOURCES[0]).choices[0].text == before[1]
    assert httpx.delete(f"{server.v1}/adapters/lora2", timeout=60).status_code == 200
    after = [client.completions.create(model=m, prompt=SOURCES[0]).choices[0].text for m in [BASE, "lora"]]
    assert after == before


def test_two_loads_of_one_name_at_once_load_one(server):
    def load(path):
        return httpx.post(f"{server.v1}/adapters", json={"name": "twice", "path": path}, timeout=60)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(load, ["embedding/run", "lora/run"]))
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    assert httpx.delete(f"{server.v1}/adapters/twice", timeout=60).status_code == 200
    assert [m["id"] for m in httpx.get(f"{server.v1}/models").json()["data"]] == [BASE, *KINDS]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"name": "x", "path": "../outside/lora/run"}, 403, ["outside --adapter-root"]),
        ({"name": "x", "path": "link/run"}, 403, ["outside --adapter-root"]),  # a symlink out of the root
        ({"name": "x", "path": "/etc"}, 403, ["outside --adapter-root"]),
        ({"name": "x", "path": "nowhere"}, 404, ["no such run directory"]),
        ({"name": "x", "path": "a\u0000b"}, 400, ["not a usable path"]),
        ({"name": "x", "path": "a" * 5000}, 400, ["not a usable path"]),
        ({"name": "x", "path": "llama/run"}, 400, ["not loaded", "tiny-llama", "the base here is tiny-gpt2"]),
        ({"name": "x", "path": "llama"}, 400, ["not a peftrun run directory"]),
        ({"name": "../x", "path": "lora/run"}, 400, ["'name'"]),
        ({"name": "prefix", "path": "lora/run"}, 409, ["loaded already"]),
        ({"name": "x"}, 400, ["send exactly"]),
    ],
)
def test_bad_loads_are_refused_and_load_nothing(server, body, status, words):
    response = httpx.post(f"{server.v1}/adapters", json=body, timeout=60)
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["error"]["message"]
    assert [m["id"] for m in httpx.get(f"{server.v1}/models").json()["data"]] == [BASE, *KINDS]


def test_an_api_key_guards_every_endpoint_but_health(runs, tmp_path):
    (tmp_path / "key").write_text("s3cret\n")
    # The root is a run's adapter/ folder: loading "." would read the run above it, outside.
    live = LiveServer("--adapter", f"lora={runs['lora']}", "--api-key-file", str(tmp_path / "key"),
                      "--adapter-root", str(runs["prefix"] / "adapter"))  # fmt: skip
    try:
        assert httpx.get(f"{live.url}/health").status_code == 200
        calls = [
            ("GET", "/metrics", None),
            ("GET", "/v1/models", None),
            ("POST", "/v1/completions", {"model": "lora", "prompt": "x"}),
            ("POST", "/v1/adapters", {"name": "p", "path": "prefix/run"}),
            ("DELETE", "/v1/adapters/lora", None),
        ]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path, body in calls:
                response = httpx.request(method, live.url + path, json=body, headers=headers)
                assert response.status_code == 401, (method, path, headers)
                assert "API key" in response.json()["error"]["message"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=live.v1, api_key="wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=live.v1, api_key="s3cret", max_retries=0)
        assert good.completions.create(model="lora", prompt=SOURCES[0]).choices[0].text
        key = {"Authorization": "Bearer s3cret"}
        up = httpx.post(f"{live.v1}/adapters", json={"name": "p", "path": "."}, headers=key)
        assert up.status_code == 403 and "leads outside --adapter-root" in up.json()["error"]["message"], (
            up.text
        )
    finally:
        assert live.stop() == 0


def test_a_full_queue_answers_429_with_retry_after(runs):
    live = LiveServer("--adapter", f"lora={runs['lora']}", "--max-queue", "2", "--max-batch", "1")
    try:
        body = {"model": "lora", "prompt": SOURCES[0], "n": 2, "max_tokens": 60}
        with ThreadPoolExecutor(6) as pool:
            responses = list(
                pool.map(lambda _: httpx.post(f"{live.v1}/completions", json=body, timeout=120), range(6))
            )
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 429 in codes, codes
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.headers["retry-after"] == "1"
        assert "queue is full" in refused.json()["error"]["message"]
        never = httpx.post(f"{live.v1}/completions", json={**body, "n": 3})  # more than the queue holds
        assert never.status_code == 400 and "the queue holds 2" in never.json()["error"]["message"]
        assert httpx.delete(f"{live.v1}/adapters/lora").status_code == 403  # no --adapter-root: no changes
    finally:
        assert live.stop() == 0


def test_sigterm_under_traffic_answers_every_accepted_request_and_exits_0(runs, tmp_path):
    live = LiveServer(
        *(a for kind in KINDS for a in ("--adapter", f"{kind}={runs[kind]}")), "--max-batch", "4"
    )
    outputs = generate_reference(runs, [("ptuning", s) for s in SOURCES], tmp_path)
    expected = dict(zip(SOURCES, outputs, strict=True))
    results, errors = [], []
    started = threading.Barrier(9)

    def one_client(i):
        started.wait()
        for k in range(6):
            source = SOURCES[(i + k) % len(SOURCES)]
            try:  # a connection of its own each time: no request is sent on a connection being closed
                response = httpx.post(
                    f"{live.v1}/completions", json={"model": "ptuning", "prompt": source}, timeout=120
                )
            except httpx.TransportError as err:  # the server had stopped taking requests
                errors.append(err)
                return
            results.append((source, response.status_code, response.json()))

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    started.wait()
    while len(results) < 4:
        threading.Event().wait(0.02)
    code = live.stop()
    for thread in threads:
        thread.join()
    assert code == 0, "\n".join(live.lines)
    assert results and all(status == 200 for _, status, _ in results), results
    assert all(body["choices"][0]["text"] == expected[source] for source, _, body in results)
    # The server's own count: every request it accepted was answered, and the clients got them all.
    assert (
        live.lines[-1]
        == f"peftrun serve: stopped; {len(results)} of {len(results)} accepted requests answered"
    )
    assert errors, "some clients were still sending when the server stopped"


def test_a_client_that_leaves_frees_its_rows(runs):
    """Streamed or not, a request whose client has gone stops at its next token (the server's
    token counter grows by far less than max_tokens) and the next request is served."""
    live = LiveServer("--adapter", f"lora={runs['lora']}")
    try:
        body = {"model": "lora", "prompt": SOURCES[0], "max_tokens": 480}
        whole = httpx.post(f"{live.v1}/completions", json=body, timeout=120).json()
        assert whole["usage"]["completion_tokens"] == 480  # (no early EOS: leaving is what stops it)
        before = _counter(live, "peftrun_generated_tokens_total")
        with httpx.stream(
            "POST", f"{live.v1}/completions", json={**body, "stream": True}, timeout=60
        ) as response:
            next(line for line in response.iter_lines() if line.startswith("data: "))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{live.v1}/completions", json=body, timeout=0.3)
        answer = httpx.post(
            f"{live.v1}/completions", json={"model": "lora", "prompt": SOURCES[1]}, timeout=60
        )
        assert answer.status_code == 200
        spent = _counter(live, "peftrun_generated_tokens_total") - before
        assert spent < 480, f"the two requests that were left generated {spent - 10} tokens"
    finally:
        assert live.stop() == 0


def _counter(server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name}")


def test_two_servers_behind_one_client_give_the_same_outputs(runs, tmp_path):
    """Replicas hold no state but their adapters: a client spreading requests over two servers
    gets what one server gives."""
    args = [a for kind in KINDS for a in ("--adapter", f"{kind}={runs[kind]}")]
    replicas = [LiveServer(*args), LiveServer(*args)]
    try:
        rows = [(kind, source) for kind in KINDS for source in SOURCES]
        clients = [openai.OpenAI(base_url=r.v1, api_key="x", max_retries=0, timeout=120) for r in replicas]

        def complete(i):  # request i goes to replica i % 2
            return clients[i % 2].completions.create(model=rows[i][0], prompt=rows[i][1]).choices[0].text

        with ThreadPoolExecutor(4) as pool:
            texts = list(pool.map(complete, range(len(rows))))
        assert texts == generate_reference(runs, rows, tmp_path)
    finally:
        assert all(r.stop() == 0 for r in replicas)


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bart"])
def test_other_families_serve_mixed_batches_equal_to_generate(model, tmp_path):
    kinds = ["prefix", "lora", "prompt"]
    runs = {kind: make_run(tmp_path / kind, model, kind, seed=111 + i) for i, kind in enumerate(kinds)}
    live = LiveServer(*(a for kind in kinds for a in ("--adapter", f"{kind}={runs[kind]}")))
    try:
        rows = [(kind, source) for source in SOURCES for kind in [*kinds, None]]

        def complete(row):
            body = {"model": row[0] or model, "prompt": row[1]}
            return httpx.post(f"{live.v1}/completions", json=body, timeout=120).json()["choices"][0]["text"]

        with ThreadPoolExecutor(8) as pool:
            texts = list(pool.map(complete, rows))
        assert texts == generate_reference(runs, rows, tmp_path)
    finally:
        assert live.stop() == 0


def test_serve_refuses_bad_options_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from peftrun.cli import app

    cases = [
        (["--max-batch", "0"], "--max-batch and --max-queue must be at least 1"),
        (["--api-key-file", str(tmp_path / "none")], "--api-key-file"),
        (["--adapter-root", str(tmp_path / "none")], "no such folder"),
        ([], "give --adapter NAME=RUN_DIR"),
    ]
    for args, words in cases:
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output


def test_a_short_prompt_with_a_long_limit_is_never_cut_by_a_long_prompt_beside_it(
    server, client, runs, tmp_path
):
    """Rows share a decoder-only batch only if the longest prompt and the longest limit fit the
    positions together: a short prompt asking for 480 tokens waiting beside a 250-token prompt
    still gets its 480 tokens, as `peftrun generate` gives them."""
    long_mr = f"name[{' '.join(['word'] * 120)}]"  # ~360 tokens, cut to half the positions
    expected = generate_reference(runs, [("lora", SOURCES[0])], tmp_path, ["decode.max_new_tokens=480"])[0]
    with ThreadPoolExecutor(3) as pool:
        blocker = pool.submit(client.completions.create, model="lora", prompt=SOURCES[1], max_tokens=200)
        threading.Event().wait(0.3)  # the two below wait together while the blocker decodes
        wide = pool.submit(client.completions.create, model="lora", prompt=long_mr, max_tokens=10)
        short = pool.submit(client.completions.create, model="lora", prompt=SOURCES[0], max_tokens=480)
        answers = [f.result() for f in (blocker, wide, short)]
    assert answers[2].usage.completion_tokens == 480
    assert answers[2].choices[0].text == expected
    assert answers[1].usage.prompt_tokens > 200


LONG_MR = f"name[{' '.join(['word'] * 120)}]"  # ~360 tokens, cut to half the positions


def _post(server, body: dict) -> dict:
    response = httpx.post(f"{server.v1}/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _behind_a_blocker(server, bodies: list[dict], apart: float = 0.0) -> list[dict]:
    """The answers to `bodies`, sent in order (`apart` seconds between them) while another request
    decodes, so that they wait, and can share a batch, together."""
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        blocker = pool.submit(_post, server, {"model": "lora", "prompt": SOURCES[1], "max_tokens": 150})
        threading.Event().wait(0.3)
        answers = []
        for body in bodies:
            answers.append(pool.submit(_post, server, body))
            threading.Event().wait(apart)
        blocker.result()
        return [answer.result() for answer in answers]


def test_a_row_gets_every_token_it_asked_for_whatever_prefix_waits_beside_it(server):
    """A prefix holds 3 of tiny-gpt2's 512 positions (509 are left for its prompt and output): a
    base row asking for every position but its prompt's must not share a batch with a prefix row
    that would take 3 of its tokens; it gets them all, cut by its own max_tokens ("length")."""
    width = _post(server, {"model": BASE, "prompt": LONG_MR, "max_tokens": 1})["usage"]["prompt_tokens"]
    full = {"model": BASE, "prompt": LONG_MR, "max_tokens": 512 - width}  # every position of the base
    base, prefix = _behind_a_blocker(
        server, [full, {"model": "prefix", "prompt": SOURCES[0], "max_tokens": 5}], apart=0.2
    )
    ends = [(a["usage"]["completion_tokens"], a["choices"][0]["finish_reason"]) for a in (base, prefix)]
    assert ends == [(512 - width, "length"), (5, "length")]


def test_sampled_rows_waiting_together_each_decode_with_their_own_temperature_and_top_p(server):
    """Rows of sampled requests that differ only in temperature (or top_p) wait together: each
    row is decoded with its own. Near-greedy settings (temperature 1e-6, or top_p 1e-6: the top
    token alone) give the greedy text; temperature 2 on tiny-gpt2's flat logits never does."""
    prompt = {"model": BASE, "prompt": SOURCES[2], "max_tokens": 8}
    greedy = _post(server, {**prompt, "temperature": 0})["choices"][0]["text"]
    settings = [{"temperature": 1e-6}, {"temperature": 2.0}, {"top_p": 1e-6}, {"top_p": 1.0}]
    answers = _behind_a_blocker(server, [{**prompt, **s, "n": 2} for s in settings])
    texts = [[choice["text"] for choice in answer["choices"]] for answer in answers]
    assert texts[0] == texts[2] == [greedy, greedy], texts
    assert all(text != greedy for text in texts[1] + texts[3]), texts


def test_a_prompt_and_max_tokens_that_fill_every_position_are_served_and_one_more_is_refused(server):
    """The prefix leaves 509 of tiny-gpt2's positions: prompt + max_tokens = 509 is served to its
    last token; 510 is refused (400)."""
    body = {"model": "prefix", "prompt": LONG_MR}
    width = _post(server, {**body, "max_tokens": 1})["usage"]["prompt_tokens"]
    exact = _post(server, {**body, "max_tokens": 509 - width})
    assert exact["usage"]["completion_tokens"] == 509 - width
    over = httpx.post(f"{server.v1}/completions", json={**body, "max_tokens": 510 - width}, timeout=60)
    assert over.status_code == 400, over.text
    assert "need 510 positions; tiny-gpt2 holds 509 here" in over.json()["error"]["message"]


def test_the_queue_limit_counts_rows_a_request_with_n_4_is_4(runs):
    """--max-queue is rows (a request's prompts x n), not requests. The engine is not started, so
    every row submitted waits."""
    import peftrun
    from peftrun.serving.engine import Completion, Engine, QueueFull
    from peftrun.serving.metrics import ServeMetrics

    lm = peftrun.load(f"lora={runs['lora']}")
    decode = lm.adapters.adapters["lora"].cfg.decode

    def request(n: int, prompts: int = 1) -> Completion:
        return Completion("lora", [SOURCES[0]] * prompts, n, decode, (), None, False, lambda event: None, 10,
                          widths=[15] * prompts)  # fmt: skip

    engine = Engine(lm.adapters, ServeMetrics(), max_queue=4)
    engine.submit(request(4))  # one request, 4 rows: the queue is full
    for refused in (request(1), request(1, prompts=2)):
        with pytest.raises(QueueFull, match="4 rows wait, at most 4"):
            engine.submit(refused)
    engine = Engine(lm.adapters, ServeMetrics(), max_queue=4)
    engine.submit(request(2, prompts=1))
    engine.submit(request(1, prompts=2))  # 2 + 2 rows: taken
    with pytest.raises(QueueFull):
        engine.submit(request(1))


def test_a_stream_never_sends_the_start_of_a_stop_string_that_then_completes(server, client):
    """A stop string whose all-but-last characters end the text at one token and whose last
    character starts the next: the stream holds those characters back, and its pieces add up to
    the non-streamed text, cut before the stop."""
    prompt = {"model": BASE, "prompt": SOURCES[0]}
    whole = _post(server, prompt)["choices"][0]["text"]  # 10 tokens
    stop = None
    for tokens in range(1, 10):
        start = _post(server, {**prompt, "max_tokens": tokens})["choices"][0]["text"]
        if len(start) >= 4 and start[-1].isalnum() and whole.startswith(start) and len(whole) > len(start):
            candidate = start[-3:] + whole[len(start)]
            if whole.find(candidate) == len(start) - 3:
                stop = candidate
                break
    assert stop is not None, f"no token boundary to put a stop string across in {whole!r}"
    body = {**prompt, "stop": [stop]}
    expected = client.completions.create(**body).choices[0]
    assert (expected.text, expected.finish_reason) == (whole[: whole.find(stop)], "stop")
    pieces = [c.choices[0].text for c in client.completions.create(**body, stream=True) if c.choices]
    assert "".join(pieces) == expected.text, pieces


def test_a_folder_beside_the_root_whose_name_starts_with_the_roots_is_outside_it(server, runs):
    """`ROOT-evil` is not under `ROOT` although its path starts with ROOT's: the path itself is
    refused (403, before anything is read: a missing folder there is not told apart), not only
    the files a run there would read (`test_an_api_key_guards_every_endpoint_but_health`)."""
    root = runs["root"]
    evil = root.parent / f"{root.name}-evil"
    shutil.copytree(runs["lora"], evil / "run", dirs_exist_ok=True)  # a whole run: it would load
    for path in (str(evil / "run"), f"../{evil.name}/run", str(evil / "nowhere")):
        response = httpx.post(f"{server.v1}/adapters", json={"name": "evil", "path": path}, timeout=60)
        assert response.status_code == 403, response.text
        assert "is outside --adapter-root" in response.json()["error"]["message"]
    assert [m["id"] for m in httpx.get(f"{server.v1}/models").json()["data"]] == [BASE, *KINDS]


def test_unloading_a_lora_gives_back_the_modules_it_wrapped(runs):
    import peftrun

    lm = peftrun.load(f"prefix={runs['prefix']}")
    before = [name for name, _ in lm.model.named_modules()]
    lm.adapters.add("lora", runs["lora"])
    assert [name for name, _ in lm.model.named_modules()] != before
    lm.adapters.remove("lora")
    assert [name for name, _ in lm.model.named_modules()] == before


def test_a_failed_engine_answers_every_waiting_request_and_refuses_new_ones(runs):
    """A fault in the engine's own loop (planted here) must not leave requests waiting forever."""
    import time

    import peftrun
    from peftrun.serving.engine import Completion, Engine, EngineBroken
    from peftrun.serving.metrics import ServeMetrics

    lm = peftrun.load(f"prefix={runs['prefix']}")
    engine = Engine(lm.adapters, ServeMetrics())

    def planted():
        raise RuntimeError("planted fault")

    engine._take_batch = planted
    events: list[tuple] = []
    decode = lm.adapters.adapters["prefix"].cfg.decode

    def request():
        return Completion("prefix", [SOURCES[0]], 1, decode, (), None, False, events.append, 10, widths=[10])

    engine.submit(request())
    engine.start()
    deadline = time.monotonic() + 30
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)
    assert events and events[0][0] == "error" and "planted fault" in events[0][1]
    with pytest.raises(EngineBroken, match="planted fault"):
        engine.submit(request())
    engine.stop()

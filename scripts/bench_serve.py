"""Throughput and latency of `peftrun serve` with k adapters on one frozen base: mixed batches
against one adapter at a time and one request at a time.

    python scripts/bench_serve.py [--model tiny-gpt2] [--adapters 1 4 16] [--clients 8] [--requests 8]
                                  [--max-tokens 32] [--device cpu] [--threads N] [--work DIR] [--out FILE]

The k adapters are real runs of `peftrun train` (cycling prefix, prompt tuning, LoRA and P-tuning,
each with its own seed; 2 updates, nothing decoded), made once and kept under `--work`. Their
decoding settings hold the EOS off (`decode.min_length` past any output: HF's generate() drops the
EOS from `bad_words_ids`, so banning it as a string does nothing), so every request (greedy,
`max_tokens` = `--max-tokens`) generates exactly that many tokens whatever the adapter: the
"tok/req" column is the mean `usage.completion_tokens` of the timed requests and says so.

For each k and each mode a server is started (`python -m peftrun serve`, this tree's code), warmed
up with one round of requests, then `--clients` threads each send `--requests` completions one
after the other, all starting together. Request j of client c names adapter (j * clients + c) mod k,
so the requests of one round name min(k, clients) different adapters and every adapter gets its
share; prompts are E2E dev MRs.

    mixed                    the default server: waiting requests are decoded in one batch, whatever
                             adapters they name (at most --max-batch rows)
    one adapter at a time    --no-mixing: a batch holds one adapter's requests only
    one request at a time    --max-batch 1: the baseline of the speed-up column

req/s and tok/s are the timed requests (and their generated tokens) over the wall time from the
start to the last answer; p50/p95 are request latencies as the client sees them. rows/batch and
adapters/batch are the means of the server's `peftrun_batch_rows` and `peftrun_batch_adapters`
histograms (GET /metrics) over the timed requests only. speed-up is req/s over the "one request
at a time" row with the same k. Greedy requests are batched continuously (a request joins the
running batch at the next token, a finished one leaves at once), so a decoding step holds about
every client's request; rows/batch is the mean rows per decoding step.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("prefix", "prompt", "lora", "ptuning")
METHODS = {
    "prefix": "{kind: prefix, prefix_len: 10}",
    "prompt": "{kind: prompt, prompt_len: 10, init: vocab}",
    "lora": "{kind: lora, rank: 4, alpha: 32, targets: [q, v]}",
    "ptuning": "{kind: ptuning, prompt_len: 10}",
}
# model.seed: one base for every adapter (a built-in tiny model's random weights come from it).
# tiny-gpt2 trains in fp32; the real model's frozen base in bf16, batch 2 (as the laptop study).
TRAIN = {
    "tiny-gpt2": "{lr: 1e-2, epochs: 1, max_steps: 2, batch_size: 8, seed: SEED, precision: fp32}",
    "smollm2-135m": "{lr: 5e-3, epochs: 1, max_steps: 2, batch_size: 2, seed: SEED, precision: bf16-frozen}",
}
CONFIG = """model: {name: MODEL, seed: 0}
data: {dataset: e2e, train_size: 16, dev_loss_size: 4}
method: METHOD
train: TRAIN
decode: {splits: [], num_beams: 1, max_new_tokens: 32, min_length: 1000000}
"""
MODES = {  # name -> `peftrun serve` flags; the baseline first, so every later row has its speed-up
    "one request at a time": ["--max-batch", "1"],
    "one adapter at a time": ["--no-mixing"],
    "mixed": [],
}
BASELINE = "one request at a time"
LISTENING = re.compile(r"listening on (http://\S+)")


def make_adapters(model: str, k: int, work: Path) -> list[tuple[str, Path]]:
    """k finished runs (name, run dir), made by `peftrun train` unless `work` holds them already.
    A run's folder is named after a hash of its config, so a changed recipe is trained afresh."""
    from peftrun import experiment
    from peftrun.runs import DONE

    made = []
    for i in range(k):
        kind, seed = KINDS[i % len(KINDS)], 101 + i
        text = (
            CONFIG.replace("MODEL", model)
            .replace("METHOD", METHODS[kind])
            .replace("TRAIN", TRAIN.get(model, TRAIN["tiny-gpt2"]).replace("SEED", str(seed)))
        )
        folder = work / model / f"{i:02d}-{kind}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
        run = folder / "run"
        if not (run / DONE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.yaml").write_text(text, encoding="utf-8")
            print(f"[bench_serve] training adapter {i} ({kind}) in {run}", file=sys.stderr, flush=True)
            experiment.train(folder / "config.yaml", [], str(run), overwrite=True)
        made.append((f"a{i:02d}-{kind}", run))
    return made


def dev_mrs(n: int = 64) -> list[str]:
    """The first n distinct meaning representations of the E2E dev set (the packaged copy)."""
    from peftrun.data.e2e import read_rows

    return list(dict.fromkeys(mr for mr, _ in read_rows("dev")))[:n]


class Server:
    """`python -m peftrun serve` on a free port, the peftrun under `code` (default this tree);
    SIGTERM stops it."""

    def __init__(
        self, adapters, flags: list[str], device: str, threads: int, timeout: float = 900, code: Path = ROOT
    ) -> None:
        args = [a for name, run in adapters for a in ("--adapter", f"{name}={run}")]
        env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads)}
        command = [sys.executable, "-m", "peftrun", "serve", "--port", "0", "--device", device]
        self.process = subprocess.Popen(
            [*command, *args, *flags], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.log: list[str] = []
        found = threading.Event()
        self.url = None

        def read() -> None:  # keep draining stderr, or a chatty server blocks on a full pipe
            for line in self.process.stderr:
                self.log.append(line.rstrip())
                match = LISTENING.search(line)
                if match and self.url is None:
                    self.url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        found.wait(timeout)
        if self.url is None:
            self.process.kill()
            raise RuntimeError("peftrun serve did not start:\n" + "\n".join(self.log[-20:]))

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM, then the exit code (None: it did not exit in time and was killed)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def batch_means(url: str) -> dict[str, float]:
    """The _sum and _count of the server's batch histograms."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    found = {}
    for name in ("peftrun_batch_rows", "peftrun_batch_adapters"):
        for part in ("sum", "count"):
            match = re.search(rf"^{name}_{part} (\S+)$", text, re.MULTILINE)
            found[f"{name}_{part}"] = float(match.group(1)) if match else float("nan")
    return found


def run_clients(url, names, prompts, clients, requests, max_tokens, offset=0) -> dict:
    """`clients` threads, each sending `requests` completions one after the other, all starting
    together: latencies, generated tokens per request, errors and the wall time."""
    import httpx

    latencies, tokens, errors = [], [], []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            start.wait()
            for j in range(requests):
                g = j * clients + c  # round j's requests name consecutive adapters
                body = {
                    "model": names[g % len(names)],
                    "prompt": prompts[(offset + g) % len(prompts)],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                sent = time.perf_counter()
                try:
                    answer = http.post("/v1/completions", json=body)
                    took = time.perf_counter() - sent
                    if answer.status_code != 200:
                        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")
                    count = answer.json()["usage"]["completion_tokens"]
                except Exception as err:  # counted and shown under the table; the run goes on
                    with lock:
                        errors.append(f"{type(err).__name__}: {err}")
                    continue
                with lock:
                    latencies.append(took)
                    tokens.append(count)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"wall": time.perf_counter() - began, "latencies": latencies, "tokens": tokens, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(adapters, mode: str, prompts, args, clients: int, code: Path = ROOT) -> dict:
    """One row: start a server in `mode` (the peftrun under `code`), warm it up, time `clients`
    clients, read its batch metrics."""
    server = Server(adapters, MODES[mode], args.device, args.threads, code=code)
    names = [name for name, _ in adapters]
    try:
        warm = run_clients(server.url, names, prompts, clients, 1, args.max_tokens, offset=1000)
        before = batch_means(server.url)
        timed = run_clients(server.url, names, prompts, clients, args.requests, args.max_tokens)
        after = batch_means(server.url)
    finally:
        code = server.stop()
    batches = after["peftrun_batch_rows_count"] - before["peftrun_batch_rows_count"]
    rows = after["peftrun_batch_rows_sum"] - before["peftrun_batch_rows_sum"]
    mixed = after["peftrun_batch_adapters_sum"] - before["peftrun_batch_adapters_sum"]
    done = len(timed["latencies"])
    notes = [f"warm-up: {e}" for e in warm["errors"][:3]] + timed["errors"][:3]
    if len(timed["errors"]) > 3:
        notes.append(f"... {len(timed['errors'])} failed requests in all")
    if code != 0:
        notes.append(
            f"server exit code {code} after SIGTERM" if code is not None else "server hung on SIGTERM"
        )
    short = [t for t in timed["tokens"] if t != args.max_tokens]
    if short:
        notes.append(
            f"{len(short)} of {done} answers had completion_tokens != {args.max_tokens}: {short[:8]}"
        )
    return {
        "req/s": done / timed["wall"],
        "tok/s": sum(timed["tokens"]) / timed["wall"],
        "tok/req": statistics.mean(timed["tokens"]) if timed["tokens"] else float("nan"),
        "p50": percentile(timed["latencies"], 0.5),
        "p95": percentile(timed["latencies"], 0.95),
        "rows/batch": rows / batches if batches else float("nan"),
        "adapters/batch": mixed / batches if batches else float("nan"),
        "done": done,
        "notes": notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-gpt2", help="tiny-gpt2 or smollm2-135m")
    parser.add_argument("--adapters", type=int, nargs="+", default=[1, 4, 16], help="values of k")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[8], help="concurrent clients (each value a row)"
    )
    parser.add_argument("--requests", type=int, default=8, help="requests per client, one after the other")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens generated per request")
    parser.add_argument("--device", default="cpu", help="the server's --device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "peftrun-bench-serve")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--code",
        action="append",
        metavar="LABEL=DIR",
        help="also serve with the peftrun in DIR (e.g. a git worktree of an older commit), rows "
        "labelled LABEL; repeatable. Default: this tree alone",
    )
    args = parser.parse_args()
    codes = [("this tree", ROOT)]
    for item in args.code or []:
        label, _, folder = item.partition("=")
        if not folder or not (Path(folder) / "peftrun").is_dir():
            parser.error(f"--code {item}: give LABEL=DIR, DIR holding a peftrun package")
        codes.insert(0, (label, Path(folder).resolve()))
    if min(args.adapters) < 1 or min(args.clients) < 1 or args.requests < 1 or args.max_tokens < 1:
        parser.error("--adapters, --clients, --requests and --max-tokens must be at least 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    import torch
    from bench_common import machine

    if args.threads is None:
        args.threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    adapters = make_adapters(args.model, max(args.adapters), args.work)
    prompts = dev_mrs()
    modes = [BASELINE] + [m for m in args.modes if m != BASELINE] if BASELINE in args.modes else args.modes
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    emit(f"# bench_serve · {machine(args.device)}")
    kinds = ", ".join(dict.fromkeys(KINDS[i % len(KINDS)] for i in range(max(args.adapters))))
    emit(
        f"# {args.model} ({args.device}, {args.threads} torch threads in the server), adapters cycling "
        f"{kinds}; {'/'.join(map(str, args.clients))} clients x {args.requests} requests, greedy, "
        f"max_tokens {args.max_tokens} "
        f"(EOS held off by decode.min_length); prompts: {len(prompts)} E2E dev MRs; "
        "a warm-up round of one request per client first"
    )
    emit()
    head = ["model", "code", "device", "threads", "k", "mode", "clients", "req/s", "tok/s", "tok/req"]
    head += ["p50 s", "p95 s", "rows/batch", "adapters/batch", "speed-up"]
    emit("| " + " | ".join(head) + " |")
    emit("|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes: dict[str, list[str]] = {}  # note -> the rows that gave it
    for k in args.adapters:
        for clients in args.clients:
            baseline = None
            for (label, code), mode in [(c, m) for m in modes for c in codes]:
                if mode == BASELINE and baseline is not None:
                    continue  # one baseline per (k, clients): one request at a time is the same engine work
                print(
                    f"[bench_serve] k={k}, {clients} clients, {label}, {mode} ...",
                    file=sys.stderr,
                    flush=True,
                )
                got = measure(adapters[:k], mode, prompts, args, clients, code)
                if mode == BASELINE:
                    baseline = got["req/s"]
                speedup = f"{got['req/s'] / baseline:.2f}x" if baseline else "–"
                cells = [args.model, label, args.device, args.threads, k, mode, clients]
                cells += [f"{got['req/s']:.2f}", f"{got['tok/s']:.1f}", f"{got['tok/req']:.1f}"]
                cells += [f"{got['p50']:.2f}", f"{got['p95']:.2f}", f"{got['rows/batch']:.2f}"]
                cells += [f"{got['adapters/batch']:.2f}", speedup]
                emit("| " + " | ".join(str(c) for c in cells) + " |")
                for note in got["notes"]:
                    notes.setdefault(note, []).append(f"k={k}, {clients} clients, {label}, {mode}")
    if notes:
        emit()
        rows = len(args.adapters) * len(args.clients) * (1 + (len(modes) - 1) * len(codes))
        for note, where in notes.items():
            emit(f"- {'every row' if len(where) == rows else '; '.join(where)}: {note}")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

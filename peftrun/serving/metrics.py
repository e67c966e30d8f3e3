"""What `GET /metrics` reports, in Prometheus text (prometheus_client, on a registry of the
server's own, so that several servers in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROWS = (1, 2, 4, 8, 16, 32, 64, 128)
SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_rows = Gauge("peftrun_queue_rows", "rows (prompt x n) waiting for a batch", registry=r)
        self.adapters_loaded = Gauge("peftrun_adapters_loaded", "adapters loaded on the base", registry=r)
        self.batch_rows = Histogram(
            "peftrun_batch_rows",
            "rows per decoding step (continuous batching) or per decoded batch",
            buckets=ROWS,
            registry=r,
        )
        self.batch_adapters = Histogram(
            "peftrun_batch_adapters",
            "adapters (the base alone counts as one) per batch",
            buckets=ROWS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "peftrun_batch_seconds",
            "time of a decoding step (continuous batching) or to decode a batch",
            buckets=SECONDS,
            registry=r,
        )
        self.batch_failures = Counter("peftrun_batch_failures", "batches whose decoding raised", registry=r)
        self.tokens = Counter("peftrun_generated_tokens", "tokens generated", registry=r)
        self.tokens_per_second = Gauge(
            "peftrun_tokens_per_second", "tokens generated per second by the last step or batch", registry=r
        )
        self.requests = Counter(
            "peftrun_requests",
            "completion requests answered, by model and HTTP status",
            ["model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "peftrun_request_seconds",
            "completion request latency, arrival to last token",
            buckets=SECONDS,
            registry=r,
        )
        self.first_token = Histogram(
            "peftrun_first_token_seconds",
            "streamed requests: arrival to first text",
            buckets=SECONDS,
            registry=r,
        )

    def observe_batch(self, rows: int, adapters: int, tokens: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_adapters.observe(adapters)
        self.batch_seconds.observe(seconds)
        self.tokens.inc(tokens)
        self.tokens_per_second.set(tokens / max(seconds, 1e-9))

    def text(self) -> bytes:
        return generate_latest(self.registry)

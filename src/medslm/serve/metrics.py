"""Prometheus metrics of one server (its own registry, so several apps in one process do not mix).

Names follow vLLM's where they mean the same thing, so existing dashboards need few changes. Only
counts and timings: no label ever carries request content.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LAT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_TOK = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = "medslm_"
        self.running = Gauge(p + "num_requests_running", "requests generating now", registry=r)
        self.waiting = Gauge(p + "num_requests_waiting", "requests queued for a slot", registry=r)
        self.rejected = Counter(p + "requests_rejected", "requests answered 429 (queue full)", registry=r)
        self.requests = Counter(p + "http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter(p + "prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter(p + "generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(p + "time_to_first_token_seconds", "time to first token", buckets=_LAT,
                              registry=r)
        self.itl = Histogram(p + "inter_token_latency_seconds", "time between output tokens",
                             buckets=_TOK, registry=r)
        self.e2e = Histogram(p + "e2e_request_latency_seconds", "end-to-end request latency",
                             buckets=_LAT, registry=r)
        self.cancelled = Counter(p + "requests_cancelled", "requests whose client went away", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

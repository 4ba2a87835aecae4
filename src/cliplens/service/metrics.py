"""Prometheus metrics of one service (its own registry, so several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServiceMetrics:
    """Requests by route and status, their latency, requests in flight, and the encoder's merged batches."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("cliplens_requests", "HTTP requests answered", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("cliplens_request_seconds", "Time to answer a request", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("cliplens_requests_in_flight", "Requests being answered now", registry=self.registry)
        self.batch_images = Histogram("cliplens_encoder_batch_images", "Images per merged encoder batch",
                                      buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram("cliplens_encoder_batch_seconds", "Time to encode one merged batch",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.images = Counter("cliplens_images_encoded", "Images encoded", registry=self.registry)
        self.model = Gauge("cliplens_model_info", "The model this service runs", ["model"], registry=self.registry)

    def set_model(self, name: str) -> None:
        self.model.labels(model=name).set(1)

    def observe_batch(self, images: int, seconds: float) -> None:
        self.batch_images.observe(images)
        self.batch_seconds.observe(seconds)
        self.images.inc(images)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics, one registry per app (several apps may live in one test process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PoolCollector(Collector):
    """Reads the connection pool's counters at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int] | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        if stats is None:
            return
        for key, help_text in (
            ("pool_min", "Minimum connections kept open"),
            ("pool_max", "Maximum connections allowed"),
            ("pool_size", "Connections open now (in use and idle)"),
            ("pool_available", "Idle connections ready for a request"),
            ("requests_waiting", "Requests queued for a connection"),
        ):
            family = GaugeMetricFamily(f"alai_db_{key}", help_text)
            family.add_metric([], float(stats.get(key, 0)))
            yield family


class StreamCollector(Collector):
    """The stream hubs' subscribers and chunk counts, read at scrape time."""

    def __init__(self) -> None:
        self.hubs: list[Any] = []  # streams.Hub (not imported: the hubs import psycopg's pool)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        subscribers = GaugeMetricFamily("alai_stream_subscribers", "Live subscriptions on this replica",
                                        labels=["stream"])
        chunks = CounterMetricFamily(
            "alai_stream_chunks", "Chunks fanned out to subscribers: written at once (direct) or queued "
            "for a subscriber that is catching up or whose connection is applying back-pressure",
            labels=["stream", "path"])
        for hub in self.hubs:
            name = hub.source.name
            subscribers.add_metric([name], float(hub.subscribers))
            chunks.add_metric([name, "direct"], float(hub.direct_chunks))
            chunks.add_metric([name, "queued"], float(hub.queued_chunks))
        yield subscribers
        yield chunks


class Metrics:
    def __init__(self, pool_stats: Callable[[], dict[str, int] | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "alai_http_requests", "HTTP requests by route template and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "alai_http_request_duration_seconds", "Time from request to the end of the response",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.registry.register(PoolCollector(pool_stats))
        self._streams = StreamCollector()
        self.registry.register(self._streams)
        # The labelled children, kept: `labels()` costs more than the observation itself.
        # Bounded by the route templates (never raw paths) times methods and statuses.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    def watch_stream(self, hub: Any) -> None:
        """Reports a stream hub's subscribers and chunk counts on /metrics."""
        self._streams.hubs.append(hub)

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = self.requests.labels(method, route, str(status))
        timer = self._timers.get((method, route))
        if timer is None:
            timer = self._timers[(method, route)] = self.latency.labels(method, route)
        counter.inc()
        timer.observe(seconds)


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's path template; never the raw path (unbounded label values)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"

"""Prometheus metrics of the service (text exposition format at GET /metrics).

- ``tada_requests_total{endpoint, method, status}``: every HTTP request, rejected ones included; those the HTTP
  parser refuses (`tada.serving.protocol`) under endpoint ``other`` and method ``unknown``.
- ``tada_request_latency_seconds{endpoint}``: a histogram of the time from request to response (requests the
  parser refuses have none: their start was never seen).
- ``tada_rejected_requests_total{reason}``: 4xx answers by reason (``not_an_image``, ``body_too_large``, ...).
- ``tada_images_predicted_total`` and ``tada_predictions_total{label}``: images served and predicted classes.
- ``tada_shift_score``: a histogram of every image's shift score since the start.
- ``tada_shift_window_{images,mean,p50,p95,fraction_above_threshold}``, ``tada_shift_threshold`` and
  ``tada_shift_alert``: the rolling window summary (`tada.serving.shift.ShiftMonitor`), read at scrape time.
- ``tada_estimated_accuracy_window`` and ``tada_estimated_accuracy_at_export``: ATC's label-free accuracy estimate
  on the recent traffic and on the target images at export (`tada.serving.accuracy.AccuracyMonitor`).

Each app has its own registry, so two apps in one process (tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tada.serving.accuracy import AccuracyMonitor
from tada.serving.shift import ShiftMonitor

disable_created_metrics()  # no *_created series: they double the output and no dashboard here reads them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHIFT_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 50.0)


class _ShiftWindow(Collector):
    """Gauges computed from the rolling window when Prometheus scrapes."""

    def __init__(self, monitor: ShiftMonitor, alert: Callable[[], bool]) -> None:
        self.monitor, self.alert = monitor, alert

    def collect(self) -> Iterator[Metric]:
        s = self.monitor.summary()
        yield GaugeMetricFamily("tada_shift_window_images", "Images in the rolling shift window", s["images"])
        yield GaugeMetricFamily("tada_shift_threshold", "Shift score above which an image counts as shifted",
                                s["threshold"])
        for key, name, text in (("mean", "mean", "Mean"), ("p50", "p50", "Median"), ("p95", "p95", "95th percentile"),
                                ("fraction_above", "fraction_above_threshold", "Fraction above the threshold")):
            if s[key] is not None:
                yield GaugeMetricFamily(f"tada_shift_window_{name}", f"{text} of the shift scores in the window",
                                        s[key])
        yield GaugeMetricFamily("tada_shift_alert", "1 when the window's fraction above the threshold is over the "
                                "alert fraction", float(self.alert()))


class _AccuracyWindow(Collector):
    def __init__(self, monitor: AccuracyMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        s = self.monitor.summary()
        yield GaugeMetricFamily("tada_estimated_accuracy_at_export", "ATC's estimated target accuracy at export",
                                s["at_export"])
        if s["estimated_accuracy"] is not None:
            yield GaugeMetricFamily("tada_estimated_accuracy_window", "ATC's estimated accuracy of the images in the "
                                    "rolling window (label-free)", s["estimated_accuracy"])


class ServiceMetrics:
    def __init__(self, monitor: ShiftMonitor | None, alert: Callable[[], bool],
                 accuracy: AccuracyMonitor | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tada_requests", "HTTP requests", ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("tada_request_latency_seconds", "Time from request to response", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("tada_rejected_requests", "Requests answered 4xx, by reason", ["reason"], registry=r)
        self.images = Counter("tada_images_predicted", "Images predicted", registry=r)
        self.labels = Counter("tada_predictions", "Predicted class of each image", ["label"], registry=r)
        self.shift = Histogram("tada_shift_score", "Shift score of each image since the start",
                               buckets=SHIFT_BUCKETS, registry=r)
        if monitor is not None:
            r.register(_ShiftWindow(monitor, alert))
        if accuracy is not None:
            r.register(_AccuracyWindow(accuracy))

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

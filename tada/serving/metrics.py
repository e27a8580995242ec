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

- ``tada_release_info{release}`` (1 for the release being served), ``tada_release_swaps_total`` and
  ``tada_release_refused`` (1 while the last release the link pointed at was refused).
- ``tada_capture_images_total``, ``tada_capture_duplicates_total``, ``tada_capture_evicted_total``,
  ``tada_capture_dropped_total{reason}``, ``tada_capture_bytes`` and ``tada_capture_queued``, with ``--capture``
  (`tada.serving.capture`).

Every series carries the ``release`` label of the release that answered (for the windows and capture: the one being
served), so the series of two releases never mix; with no release loaded yet it is ``none``. Each app has its own
registry, so two apps in one process (tests) never share counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tada.serving.capture import Capture
from tada.serving.release import ReleaseSlot

disable_created_metrics()  # no *_created series: they double the output and no dashboard here reads them

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHIFT_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 20.0, 50.0)


def _release(slot: ReleaseSlot) -> str:
    current = slot.current
    return "none" if current is None else current.release


class _Windows(Collector):
    """Gauges computed when Prometheus scrapes: the serving release's shift and accuracy windows, the release,
    and the capture's counters."""

    def __init__(self, slot: ReleaseSlot, alert: Callable[[], bool], capture: Capture | None) -> None:
        self.slot, self.alert, self.capture = slot, alert, capture

    @staticmethod
    def _gauge(name: str, text: str, release: str, value: float, kind=GaugeMetricFamily, **labels: str) -> Metric:
        family = kind(name, text, labels=["release", *labels])
        family.add_metric([release, *labels.values()], value)
        return family

    def collect(self) -> Iterator[Metric]:
        current = self.slot.current
        release = _release(self.slot)
        yield self._gauge("tada_release_info", "1 for the release being served", release, 1.0)
        yield self._gauge("tada_release_swaps", "Releases swapped in since the start", release, self.slot.swaps,
                          CounterMetricFamily)
        yield self._gauge("tada_release_refused", "1 while the release the followed link points at is refused",
                          release, float(self.slot.refused is not None))
        if current is not None and current.monitor is not None:
            s = current.monitor.summary()
            yield self._gauge("tada_shift_window_images", "Images in the rolling shift window", release, s["images"])
            yield self._gauge("tada_shift_threshold", "Shift score above which an image counts as shifted", release,
                              s["threshold"])
            for key, name, text in (("mean", "mean", "Mean"), ("p50", "p50", "Median"),
                                    ("p95", "p95", "95th percentile"),
                                    ("fraction_above", "fraction_above_threshold", "Fraction above the threshold")):
                if s[key] is not None:
                    yield self._gauge(f"tada_shift_window_{name}", f"{text} of the shift scores in the window",
                                      release, s[key])
            yield self._gauge("tada_shift_alert", "1 when the window's fraction above the threshold is over the "
                              "alert fraction", release, float(self.alert()))
        if current is not None and current.accuracy is not None:
            s = current.accuracy.summary()
            yield self._gauge("tada_estimated_accuracy_at_export", "ATC's estimated target accuracy at export",
                              release, s["at_export"])
            if s["estimated_accuracy"] is not None:
                yield self._gauge("tada_estimated_accuracy_window", "ATC's estimated accuracy of the images in the "
                                  "rolling window (label-free)", release, s["estimated_accuracy"])
        if self.capture is not None:
            c = self.capture.summary()
            for key, text in (("captured", "Images written to the capture directory"),
                              ("duplicates", "Captured images already stored (kept once)"),
                              ("evicted", "Captured images deleted, oldest first, to keep within the byte budget")):
                yield self._gauge(f"tada_capture_{'images' if key == 'captured' else key}", text, release, c[key],
                                  CounterMetricFamily)
            dropped = CounterMetricFamily("tada_capture_dropped", "Images not captured, by reason (the request "
                                          "succeeded)", labels=["release", "reason"])
            for reason, n in sorted(c["dropped"].items()):
                dropped.add_metric([release, reason], n)
            yield dropped
            yield self._gauge("tada_capture_bytes", "Bytes of captured images in the directory", release, c["bytes"])
            yield self._gauge("tada_capture_queued", "Images waiting for the capture writer", release, c["queued"])


class ServiceMetrics:
    def __init__(self, slot: ReleaseSlot, alert: Callable[[], bool], capture: Capture | None = None) -> None:
        self.slot = slot
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("tada_requests", "HTTP requests", ["endpoint", "method", "status", "release"],
                                 registry=r)
        self._latency = Histogram("tada_request_latency_seconds", "Time from request to response",
                                  ["endpoint", "release"], buckets=LATENCY_BUCKETS, registry=r)
        self._rejected = Counter("tada_rejected_requests", "Requests answered 4xx, by reason", ["reason", "release"],
                                 registry=r)
        self._images = Counter("tada_images_predicted", "Images predicted", ["release"], registry=r)
        self._labels = Counter("tada_predictions", "Predicted class of each image", ["label", "release"], registry=r)
        self._shift = Histogram("tada_shift_score", "Shift score of each image since the start", ["release"],
                                buckets=SHIFT_BUCKETS, registry=r)
        r.register(_Windows(slot, alert, capture))

    def reject(self, code: str, release: str | None = None) -> None:
        self._rejected.labels(code, release or _release(self.slot)).inc()

    def count_unparsed(self, code: str, status: int) -> None:
        """A request the HTTP parser refused: neither its endpoint nor its method was read."""
        release = _release(self.slot)
        self._rejected.labels(code, release).inc()
        self._requests.labels("other", "unknown", str(status), release).inc()

    def predicted(self, release: str, labels: list[str], shift_scores: list[float]) -> None:
        self._images.labels(release).inc(len(labels))
        for label in labels:
            self._labels.labels(label, release).inc()
        for s in shift_scores:
            self._shift.labels(release).observe(s)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float,
                        release: str | None = None) -> None:
        release = release or _release(self.slot)
        self._requests.labels(endpoint, method, str(status), release).inc()
        self._latency.labels(endpoint, release).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

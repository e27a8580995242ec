"""The HTTP service in-process (FastAPI's TestClient): predictions, every bad input, metrics, health, shift."""

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_text import metric
from serving_model import noise_images, png, tiny_model

from tada.serving import Predictor
from tada.serving.app import MAX_PARTS, create_app
from tada.serving.settings import ServeSettings

MULTIPART_B = "multipart/form-data; boundary=b"
LIMITS = {"max_images": 4, "max_body_bytes": 64 * 1024, "max_pixels": 64 * 64, "shift_window": 50}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def serving(tiny, **overrides) -> TestClient:
    """A test client of the service for ``tiny`` with `LIMITS` and ``overrides``."""
    settings = ServeSettings(model=tiny.onnx, **{**LIMITS, **overrides})
    app = create_app(Predictor(tiny.onnx, max_pixels=settings.max_pixels, shift_threshold=settings.shift_threshold),
                     settings)
    return TestClient(app)


@pytest.fixture
def client(tiny):
    with serving(tiny) as c:
        yield c


def files(*blobs, content_type="image/png"):
    return [("images", (f"{i}.png", blob, content_type)) for i, blob in enumerate(blobs)]


def target_png(tiny, i=0):
    return tiny.target_pngs[i].read_bytes()


def test_predicts_several_images_like_the_predictor(client, tiny):
    blobs = [target_png(tiny, i) for i in range(3)]
    response = client.post("/predict", files=files(*blobs))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = Predictor(tiny.onnx).predict_bytes(blobs)
    assert [p["filename"] for p in body["predictions"]] == ["0.png", "1.png", "2.png"]
    for got, want in zip(body["predictions"], expected, strict=True):
        assert got["label"] == want.label and got["confidence"] == pytest.approx(want.confidence)
        assert got["shift_score"] == pytest.approx(want.shift_score)
        assert got["shifted"] == (want.shift_score > body["shift_threshold"])
        assert [t["label"] for t in got["top_k"]] == [label for label, _ in want.top_k]
    assert body["shift_threshold"] == pytest.approx(Predictor(tiny.onnx).info.shift_reference["threshold"])


def _truncated(tiny):
    data = target_png(tiny)
    return data[: len(data) // 2]


BAD_INPUTS = {  # name -> (request kwargs, status, error code, words of the message)
    "not an image": (lambda t: {"files": files(b"hello, not an image")}, 422, "not_an_image", "image 0 ('0.png')"),
    "corrupt image": (lambda t: {"files": files(target_png(t), _truncated(t))}, 422, "corrupt_image", "image 1"),
    "too many images": (lambda t: {"files": files(*[target_png(t)] * 5)}, 413, "too_many_images", "5 in this request"),
    "body too large": (lambda t: {"files": files(b"\0" * 70_000)}, 413, "body_too_large", "limit of 65536 bytes"),
    "body too large, chunked": (lambda t: {"content": iter([b"x" * 40_000] * 2),
                                           "headers": {"content-type": MULTIPART_B}},
                                413, "body_too_large", "limit of 65536 bytes"),
    "wrong content type": (lambda t: {"json": {"image": "aGVsbG8="}}, 415, "wrong_content_type", "application/json"),
    "part not an image type": (lambda t: {"files": files(target_png(t), content_type="text/plain")}, 415,
                               "wrong_content_type", "'text/plain' is not an image type"),
    "image too large": (lambda t: {"files": files(png(np.zeros((65, 65), np.uint8)))}, 413, "image_too_large",
                        "65 x 65 pixels, at most 4096"),
    "form, not multipart": (lambda t: {"data": {"note": "hi"}}, 415, "wrong_content_type",
                  "application/x-www-form-urlencoded"),
    "text field only": (lambda t: {"data": {"note": "hi"}, "files": {"x": ("", b"", "")}}, 400, "unexpected_field",
                        "'note' is not a file"),
    "file in another field": (lambda t: {"files": [("image", ("0.png", target_png(t), "image/png"))]}, 400,
                              "unexpected_field", "file '0.png' is in the form field 'image': send images in the field "
                              "'images' (curl -F images=@digit.png)"),
    "files in two fields": (lambda t: {"files": files(target_png(t)) + [("file", ("1.png", target_png(t)))]}, 400,
                            "unexpected_field", "form field 'file'"),
    "empty multipart": (lambda t: {"content": b"--b--\r\n", "headers": {"content-type": MULTIPART_B}}, 400,
                        "no_images", "no image in the request"),
    "no boundary": (lambda t: {"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400,
                    "malformed_multipart", "boundary"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_precise_4xx_and_the_server_keeps_serving(client, tiny, case):
    make, status, code, words = BAD_INPUTS[case]
    response = client.post("/predict", **make(tiny))
    assert response.status_code == status, response.text
    assert response.json()["error"] == code and words in response.json()["detail"], response.json()
    assert client.post("/predict", files=files(target_png(tiny))).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "tada_rejected_requests_total", reason=code) == 1
    assert metric(text, "tada_requests_total", endpoint="/predict", method="POST", status=status) == 1


def parts_body(count: int, as_files: bool) -> bytes:
    """A multipart body (boundary ``b``) of ``count`` one-byte parts in the field ``images``: files, or text."""
    filename = '; filename="x.png"\r\nContent-Type: image/png' if as_files else ""
    part = f'--b\r\nContent-Disposition: form-data; name="images"{filename}\r\n\r\nx\r\n'.encode()
    return part * count + b"--b--\r\n"


@pytest.mark.parametrize(("count", "as_files", "words"), [
    (MAX_PARTS, True, f"too many images: {MAX_PARTS} in this request, at most 4 per request"),
    (MAX_PARTS + 1, True, f"too many images: more than {MAX_PARTS} parts in this request, at most 4 per request"),
    (5 * MAX_PARTS, False, f"more than {MAX_PARTS} parts in this request"),
], ids=["max_images < parts = parser limit", "files over the parser limit", "text fields over the parser limit"])
def test_more_parts_than_max_images_or_the_parser_reads_are_too_many_images(tiny, count, as_files, words):
    with serving(tiny, max_body_bytes=1 << 20) as client:
        response = client.post("/predict", content=parts_body(count, as_files), headers={"content-type": MULTIPART_B})
        assert response.status_code == 413, response.text
        body = response.json()
        assert set(body) == {"error", "detail"} and body["error"] == "too_many_images" and words in body["detail"]
        assert client.post("/predict", files=files(target_png(tiny))).status_code == 200
        text = client.get("/metrics").text
        assert metric(text, "tada_rejected_requests_total", reason="too_many_images") == 1
        assert metric(text, "tada_rejected_requests_total", reason="malformed_multipart") == 0
        assert metric(text, "tada_requests_total", endpoint="/predict", method="POST", status=413) == 1


def test_unknown_paths_and_wrong_methods_get_json_404_and_405(client, tiny):
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert missing.json()["detail"] == ("no endpoint at /no-such-page: the service answers POST /predict, GET /health, "
                                        "GET /metadata, GET /metrics")
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json() == {"error": "method_not_allowed", "detail": "GET is not allowed on /predict: it takes POST"}
    assert client.delete("/health").json()["error"] == "method_not_allowed"
    assert client.post("/predict", files=files(target_png(tiny))).status_code == 200
    text = client.get("/metrics").text
    assert metric(text, "tada_rejected_requests_total", reason="not_found") == 1
    assert metric(text, "tada_rejected_requests_total", reason="method_not_allowed") == 2
    assert metric(text, "tada_requests_total", endpoint="other", method="GET", status=404) == 1
    assert metric(text, "tada_requests_total", endpoint="/predict", method="GET", status=405) == 1


def test_metrics_count_requests_latency_images_and_shift(client, tiny):
    for i in range(3):
        assert client.post("/predict", files=files(target_png(tiny, i), target_png(tiny, i + 3))).status_code == 200
    client.post("/predict", files=files(b"nope"))
    client.get("/health")
    client.get("/no-such-page")
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert metric(text, "tada_requests_total", endpoint="/predict", method="POST", status=200) == 3
    assert metric(text, "tada_requests_total", endpoint="/predict", method="POST", status=422) == 1
    assert metric(text, "tada_requests_total", endpoint="/health", method="GET", status=200) == 1
    assert metric(text, "tada_requests_total", endpoint="other", method="GET", status=404) == 1
    assert metric(text, "tada_request_latency_seconds_count", endpoint="/predict") == 4
    assert metric(text, "tada_request_latency_seconds_bucket", endpoint="/predict", le="+Inf") == 4
    assert metric(text, "tada_images_predicted_total") == 6
    assert metric(text, "tada_shift_score_count") == 6 and metric(text, "tada_shift_window_images") == 6
    assert metric(text, "tada_shift_window_mean") > 0 and "tada_shift_window_p95 " in text
    assert metric(text, "tada_shift_threshold") > 0
    assert sum(metric(text, "tada_predictions_total", label=c) for c in tiny.task.classes) == 6


def test_health_reports_the_rolling_shift_window_and_raises_the_alert_on_noise(client, tiny):
    for i in range(0, 24, 4):
        client.post("/predict", files=files(*[target_png(tiny, j) for j in range(i, i + 4)]))
    calm = client.get("/health").json()
    assert calm["status"] == "ok" and calm["shift"]["images"] == 24 and calm["shift"]["alert"] is False
    assert calm["shift"]["fraction_above"] <= 0.1
    for pixels in noise_images(40).reshape(10, 4, 28, 28):
        assert client.post("/predict", files=files(*map(png, pixels))).status_code == 200
    shifted = client.get("/health").json()["shift"]
    assert shifted["images"] == 50  # the window
    assert shifted["fraction_above"] >= 0.75 and shifted["alert"] is True
    assert shifted["mean"] > 3 * calm["shift"]["mean"]
    assert metric(client.get("/metrics").text, "tada_shift_alert") == 1


def test_metadata_describes_model_and_limits(client, tiny):
    body = client.get("/metadata").json()
    assert body["model"]["classes"] == list(tiny.task.classes) and body["model"]["input_size"] == [1, 28, 28]
    assert body["model"]["normalisation"] == {"scale": pytest.approx(1 / 127.5), "offset": -1.0}
    assert body["model"]["shift_reference"]["signals"] == ["domain_probability", "entropy", "feature_distance"]
    assert body["service"]["max_images"] == 4 and body["service"]["max_body_bytes"] == 65536


def test_an_unexpected_error_is_a_json_500_and_the_server_keeps_serving(client, tiny, monkeypatch):
    predictor = client.app.state.slot.current.predictor

    def broken(pixels):
        raise RuntimeError("boom")

    monkeypatch.setattr(predictor, "predict_arrays", broken)
    response = client.post("/predict", files=files(target_png(tiny)))
    assert response.status_code == 500 and response.json()["error"] == "internal_error"
    monkeypatch.undo()
    assert client.post("/predict", files=files(target_png(tiny))).status_code == 200
    assert metric(client.get("/metrics").text, "tada_requests_total", endpoint="/predict", method="POST",
                  status=500) == 1


def test_health_and_metrics_estimate_the_accuracy_of_recent_traffic_without_labels(client, tiny):
    at_export = tiny_predictor_validation(tiny)["estimated_target_accuracy"]
    assert client.get("/health").json()["accuracy"] == {"window": 50, "images": 0, "at_export": at_export,
                                                        "estimated_accuracy": None}
    predictions = []
    for i in range(0, 20, 4):
        body = client.post("/predict", files=files(*[target_png(tiny, j) for j in range(i, i + 4)])).json()
        predictions += body["predictions"]
    live = client.get("/health").json()["accuracy"]
    assert live["images"] == 20
    assert live["estimated_accuracy"] == pytest.approx(sum(p["confident"] for p in predictions) / 20)
    # Confidence is not the shift score: a classifier can be confident on noise (the shift score flags that).
    for pixels in noise_images(20).reshape(5, 4, 28, 28):
        predictions += client.post("/predict", files=files(*map(png, pixels))).json()["predictions"]
    window = client.get("/health").json()["accuracy"]
    assert window["images"] == 40
    assert window["estimated_accuracy"] == pytest.approx(sum(p["confident"] for p in predictions) / 40)
    text = client.get("/metrics").text
    assert metric(text, "tada_estimated_accuracy_window") == pytest.approx(window["estimated_accuracy"])
    assert metric(text, "tada_estimated_accuracy_at_export") == pytest.approx(at_export)


def tiny_predictor_validation(tiny) -> dict:
    return Predictor(tiny.onnx).info.validation

"""Every benchmark of the registry, end to end on tiny fake releases in the official layouts.

Each test builds the release files as the official archives lay them out (directory names, list files, archive
format), serves them from an HTTP server on 127.0.0.1 (``data.mirror``), and reads the two domains through the same
code `fetch` uses. Only the checksums are the fakes' own: the registry entry is copied with them.
"""

import bz2
import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tada.config import DataConfig
from tada.data import registry
from tada.data.datasets import benchmark_splits
from tada.data.download import Archive, DownloadError


def jpeg(seed: int, size=(20, 16)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if seed % 2 else "PNG")
    return buffer.getvalue()


def tar_gz(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def zip_file(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A loopback HTTP server over a directory the tests fill; yields (directory, base URL, request log)."""
    root = tmp_path_factory.mktemp("release")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", requests
    httpd.shutdown()


def publish(monkeypatch, server_dir: Path, name: str, archives_by_domain: dict[str, tuple[str, ...]]) -> None:
    """Point the registry entry ``name`` at the fake files' checksums (same file names, layout and reader)."""
    spec = registry.get_dataset(name)

    def fake(filename: str) -> Archive:
        real = next(a for d in spec.domains for a in spec.archives(d) if a.filename == filename)
        digest = hashlib.sha256((server_dir / filename).read_bytes()).hexdigest()
        return dataclasses.replace(real, urls=("http://127.0.0.1:9/unreachable/" + filename,), sha256=digest, md5=None)

    table = {d: tuple(fake(f) for f in files) for d, files in archives_by_domain.items()}
    monkeypatch.setitem(registry.DATASETS, name, dataclasses.replace(spec, archives=lambda d: table[d]))


def fetch(tmp_path, base_url: str, name: str, source: str, target: str):
    cfg = DataConfig(name=name, source=source, target=target, cache_dir=str(tmp_path / "cache"), mirror=base_url)
    splits, classes = benchmark_splits(cfg, log=lambda line: None)
    return {k: v for k, v in splits.items()}, classes


def labels(samples) -> list:
    return sorted((s.label for s in samples), key=str)


def test_office31(server, monkeypatch, tmp_path, capsys):
    root, url, requests = server
    counts = {"amazon": {"back_pack": 3, "bike": 2, "trash_can": 1}, "webcam": {"back_pack": 1, "bike": 2}}
    files, seed = {}, 0
    for domain, per_class in counts.items():
        for cls, n in per_class.items():
            for i in range(n):
                seed += 1
                files[f"{domain}/images/{cls}/frame_{i:04d}.jpg"] = jpeg(seed)
    files["dslr/images/bike/frame_0000.jpg"] = jpeg(99)
    tar_gz(root / "domain_adaptation_images.tar.gz", files)
    publish(monkeypatch, root, "office31", {d: ("domain_adaptation_images.tar.gz",) for d in ("amazon", "dslr",
                                                                                               "webcam")})
    splits, classes = fetch(tmp_path, url, "office31", "amazon", "webcam")
    assert classes == registry.OFFICE31_CLASSES and len(classes) == 31
    assert set(splits) == {("source", "train"), ("target", "train")}  # no split: the transductive protocol
    assert labels(splits[("source", "train")]) == ["back_pack"] * 3 + ["bike"] * 2 + ["trash_can"]
    assert labels(splits[("target", "train")]) == ["back_pack", "bike", "bike"]  # kept for evaluation only
    assert "domain_adaptation_images.tar.gz" in capsys.readouterr().err  # the progress bar
    # one archive serves both domains; a second fetch reuses the extracted tree without the network
    before = len(requests)
    fetch(tmp_path, url, "office31", "webcam", "amazon")
    assert len(requests) == before


def test_office_home_real_world_has_a_space_on_disk(server, monkeypatch, tmp_path):
    root, url, _ = server
    top = "OfficeHomeDataset_10072016"
    files = {f"{top}/Art/Alarm_Clock/00001.jpg": jpeg(1), f"{top}/Art/Webcam/00001.jpg": jpeg(2),
             f"{top}/Real World/Alarm_Clock/00001.jpg": jpeg(3), f"{top}/Real World/Alarm_Clock/00002.jpg": jpeg(4),
             f"{top}/Clipart/Mug/00001.jpg": jpeg(5)}
    zip_file(root / "OfficeHomeDataset_10072016.zip", files)
    publish(monkeypatch, root, "office_home", {d: ("OfficeHomeDataset_10072016.zip",) for d in
                                               ("Art", "Clipart", "Product", "Real_World")})
    splits, classes = fetch(tmp_path, url, "office_home", "Art", "Real_World")
    assert len(classes) == 65
    assert labels(splits[("source", "train")]) == ["Alarm_Clock", "Webcam"]
    assert labels(splits[("target", "train")]) == ["Alarm_Clock", "Alarm_Clock"]


def test_image_clef_reads_the_list_files(server, monkeypatch, tmp_path):
    root, url, _ = server
    files = {"image_CLEF/c/001.jpg": jpeg(1), "image_CLEF/c/002.jpg": jpeg(2), "image_CLEF/p/2008_001.jpg": jpeg(3),
             "image_CLEF/list/cList.txt": b"c/001.jpg 0\nc/002.jpg 11\n",
             "image_CLEF/list/pList.txt": b"p/2008_001.jpg 6\n"}
    zip_file(root / "image_CLEF.zip", files)
    publish(monkeypatch, root, "image_clef", {d: ("image_CLEF.zip",) for d in ("b", "c", "i", "p")})
    splits, classes = fetch(tmp_path, url, "image_clef", "c", "p")
    assert len(classes) == 12
    assert labels(splits[("source", "train")]) == ["aeroplane", "people"]
    assert [s.path.name for s in splits[("target", "train")]] == ["2008_001.jpg"]
    assert labels(splits[("target", "train")]) == ["car"]


def test_visda_train_and_validation_tars(server, monkeypatch, tmp_path):
    root, url, _ = server
    tar_gz(root / "train.tar", {"train/aeroplane/src_1_a.png": jpeg(2), "train/truck/src_2_b.png": jpeg(4),
                                "train/image_list.txt": b"aeroplane/src_1_a.png 0\ntruck/src_2_b.png 11\n"}, "w")
    tar_gz(root / "validation.tar", {"validation/bus/x.jpg": jpeg(5),
                                     "validation/image_list.txt": b"bus/x.jpg 2\n"}, "w")
    publish(monkeypatch, root, "visda2017", {"synthetic": ("train.tar",), "real": ("validation.tar",)})
    splits, classes = fetch(tmp_path, url, "visda2017", "synthetic", "real")
    assert len(classes) == 12
    assert labels(splits[("source", "train")]) == ["aeroplane", "truck"]
    assert labels(splits[("target", "train")]) == ["bus"]


def idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_digits_mnist_to_usps_with_their_splits(server, monkeypatch, tmp_path):
    root, url, _ = server
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    for name, n in (("usps.bz2", 4), ("usps.t.bz2", 2)):
        lines = [f"{d + 1} " + " ".join(f"{j + 1}:{rng.uniform(-1, 1):.4f}" for j in range(256)) for d in range(n)]
        (root / name).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    publish(monkeypatch, root, "digits", {"mnist": tuple(a.filename for a in registry.DIGIT_ARCHIVES["mnist"]),
                                          "usps": ("usps.bz2", "usps.t.bz2")})
    splits, classes = fetch(tmp_path, url, "digits", "mnist", "usps")
    assert classes == tuple("0123456789")
    assert labels(splits[("source", "train")]) == list("01234") and labels(splits[("source", "test")]) == list("012")
    assert [s.label for s in splits[("target", "train")]] == [None] * 4  # a test split exists: train is unlabelled
    assert labels(splits[("target", "test")]) == ["0", "1"]
    assert splits[("target", "test")][0].image.shape == (16, 16)


def test_digits_svhn_and_mnist_m(server, monkeypatch, tmp_path):
    from scipy.io import savemat

    root, url, _ = server
    for name, n in (("train_32x32.mat", 3), ("test_32x32.mat", 2)):
        savemat(root / name, {"X": np.zeros((32, 32, 3, n), dtype=np.uint8), "y": np.array([[10], [1], [2]][:n])})
    tar_gz(root / "mnist_m.tar.gz", {"mnist_m/mnist_m_train/00000000.png": jpeg(2),
                                     "mnist_m/mnist_m_train_labels.txt": b"00000000.png 7\n",
                                     "mnist_m/mnist_m_test/00000000.png": jpeg(4),
                                     "mnist_m/mnist_m_test_labels.txt": b"00000000.png 3\n"})
    publish(monkeypatch, root, "digits", {"svhn": ("train_32x32.mat", "test_32x32.mat"),
                                          "mnist_m": ("mnist_m.tar.gz",)})
    splits, _ = fetch(tmp_path, url, "digits", "svhn", "mnist_m")
    assert labels(splits[("source", "train")]) == ["0", "1", "2"]  # SVHN's "10" is the digit 0
    assert splits[("source", "train")][0].image.shape == (32, 32, 3)
    assert labels(splits[("target", "test")]) == ["3"]


def test_bad_domain_names_and_a_corrupt_release_are_clear_errors(server, monkeypatch, tmp_path):
    root, url, _ = server
    with pytest.raises(ValueError, match=r"data.target: 'webcan' is not a domain of office31 \(domains: amazon"):
        fetch(tmp_path, url, "office31", "amazon", "webcan")
    with pytest.raises(ValueError, match="both 'amazon'"):
        fetch(tmp_path, url, "office31", "amazon", "amazon")
    (root / "train.tar").write_bytes(b"garbage")
    (root / "validation.tar").write_bytes(b"garbage")
    publish(monkeypatch, root, "visda2017", {"synthetic": ("train.tar",), "real": ("validation.tar",)})
    with pytest.raises(DownloadError):
        fetch(tmp_path, url, "visda2017", "synthetic", "real")
    assert not (tmp_path / "cache" / "extracted" / "visda2017" / "train.tar").exists()

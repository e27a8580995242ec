"""The dataset downloader against a real HTTP server on 127.0.0.1 (no network, no mocking of urllib).

The server serves in-memory files, honours ``Range: bytes=N-`` with 206 (unless range support is switched off),
can cut the body of its next responses in half and drop the connection, and records every request it gets.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tada.data.download import MARKER, Archive, DownloadError, ensure_dataset, extract_archive, fetch_archive
from tada.data.download import http as download_http

# --------------------------------------------------------------------------------------------------------------------
# The local server


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header) of each request
    cut_next: int = 0  # this many next responses send only the first half of the body, then close the connection
    range_support: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class Server:
    def __init__(self, state: ServerState, port: int) -> None:
        self.state, self.base = state, f"http://127.0.0.1:{port}"

    def serve(self, path: str, body: bytes) -> str:
        """Serve ``body`` at ``path``; return its URL."""
        self.state.files[path] = body
        return self.base + path

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        with self.state.lock:
            return list(self.state.requests)


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, range_header))
                cut = state.cut_next > 0
                state.cut_next -= cut
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if range_header and state.range_support:
                start = int(range_header.removeprefix("bytes=").removesuffix("-"))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2] if cut else payload)
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(state, httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real retry logic, with a short backoff."""
    monkeypatch.setattr(download_http, "_BACKOFF_BASE_S", 0.01)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing.tar.gz"


# --------------------------------------------------------------------------------------------------------------------
# Fake archives


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def quiet(_message: str) -> None:
    pass


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


BIG = random_bytes(300_000)  # large enough for a meaningful half, small enough to stay fast


# --------------------------------------------------------------------------------------------------------------------
# 1. download, progress, verification, extraction


def test_download_shows_progress_verifies_and_extracts(server, tmp_path, capsys):
    data = make_tar_gz({"office/art/a.txt": b"alpha", "office/clipart/b.txt": b"beta", "office/big.bin": BIG})
    url = server.serve("/official/office.tar.gz", data)
    archive = Archive("office.tar.gz", (url,), sha256(data))
    logged: list[str] = []

    dest = ensure_dataset([archive], tmp_path / "cache", tmp_path / "data" / "office", log=logged.append)

    err = capsys.readouterr().err
    assert "office.tar.gz" in err and "MB/s" in err and "100%" in err
    assert (dest / "office/art/a.txt").read_bytes() == b"alpha"
    assert (dest / "office/clipart/b.txt").read_bytes() == b"beta"
    assert (dest / "office/big.bin").read_bytes() == BIG
    assert (dest / MARKER).read_text() == f"{sha256(data)}  office.tar.gz\n"
    assert listing(tmp_path / "cache") == ["office.tar.gz"]  # no .part left
    assert (tmp_path / "cache/office.tar.gz").read_bytes() == data
    assert listing(tmp_path / "data") == ["office"]  # no temporary directory left beside dest
    assert any(url in line for line in logged)
    assert server.requests == [("/official/office.tar.gz", None)]


def test_no_progress_output_when_disabled(server, tmp_path, capsys):
    url = server.serve("/f.bin", BIG)
    fetch_archive(Archive("f.bin", (url,), sha256(BIG), extract=False), tmp_path, progress=False, log=quiet)
    assert capsys.readouterr().err == ""


def test_md5_is_checked_too(server, tmp_path):
    url = server.serve("/f.bin", BIG)
    ok = fetch_archive(Archive("f.bin", (url,), sha256(BIG), md5=md5(BIG)), tmp_path / "a", progress=False, log=quiet)
    assert ok.read_bytes() == BIG
    with pytest.raises(DownloadError, match=f"md5 expected {'0' * 32}, got {md5(BIG)}"):
        fetch_archive(Archive("f.bin", (url,), sha256(BIG), md5="0" * 32), tmp_path / "b", progress=False, log=quiet)
    assert listing(tmp_path / "b") == []


def test_missing_sha256_is_a_logged_warning(server, tmp_path):
    url = server.serve("/f.bin", BIG)
    logged: list[str] = []
    path = fetch_archive(Archive("f.bin", (url,), None), tmp_path, progress=False, log=logged.append)
    assert path.read_bytes() == BIG
    assert any("warning" in line and "not verified" in line for line in logged)


# --------------------------------------------------------------------------------------------------------------------
# 2. checksum mismatch


def test_checksum_mismatch_leaves_nothing_behind(server, tmp_path):
    data = make_tar_gz({"a.txt": b"alpha"})
    url = server.serve("/a.tar.gz", data)
    wrong = "ab" * 32
    archive = Archive("a.tar.gz", (url,), wrong)

    with pytest.raises(DownloadError) as caught:
        ensure_dataset([archive], tmp_path / "cache", tmp_path / "data" / "a", progress=False, log=quiet)

    message = str(caught.value)
    assert f"sha256 expected {wrong}, got {sha256(data)}" in message
    assert url in message
    assert str(tmp_path / "cache" / "a.tar.gz") in message and "local_path" in message  # how to supply it by hand
    assert listing(tmp_path / "cache") == []  # neither the .part nor the final file
    assert listing(tmp_path / "data") == []  # no dest, no temporary directory


# --------------------------------------------------------------------------------------------------------------------
# 3. resuming


def test_interrupted_download_resumes_with_range(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    server.state.cut_next = 1
    logged: list[str] = []

    path = fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=logged.append)

    assert path.read_bytes() == BIG
    assert server.requests == [("/big.bin", None), ("/big.bin", f"bytes={len(BIG) // 2}-")]
    assert any("resuming at byte" in line for line in logged)
    assert listing(tmp_path) == ["big.bin"]


def test_existing_part_file_is_resumed(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    (tmp_path / "big.bin.part").write_bytes(BIG[:1000])

    path = fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=quiet)

    assert path.read_bytes() == BIG
    assert server.requests == [("/big.bin", "bytes=1000-")]
    assert listing(tmp_path) == ["big.bin"]


def test_complete_part_file_answered_416_is_used(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    (tmp_path / "big.bin.part").write_bytes(BIG)

    path = fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=quiet)

    assert path.read_bytes() == BIG
    assert server.requests == [("/big.bin", f"bytes={len(BIG)}-")]


def test_corrupt_part_from_an_earlier_run_is_discarded_and_downloaded_again(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    (tmp_path / "big.bin.part").write_bytes(b"\0" * 1000)  # a prefix that is not the file's

    path = fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=quiet)

    assert path.read_bytes() == BIG
    assert server.requests == [("/big.bin", "bytes=1000-"), ("/big.bin", None)]


def test_interrupted_every_time_gives_up_after_attempts_and_keeps_the_part(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    server.state.cut_next = 10

    with pytest.raises(DownloadError, match="connection closed after"):
        fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=quiet, attempts=2)

    assert len(server.requests) == 2
    part = tmp_path / "big.bin.part"  # unverified, never renamed, kept for the next run to resume
    assert listing(tmp_path) == ["big.bin.part"]
    assert BIG.startswith(part.read_bytes())


# --------------------------------------------------------------------------------------------------------------------
# 4. no range support


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    server.state.range_support = False
    (tmp_path / "big.bin.part").write_bytes(BIG[:1000])

    path = fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=quiet)

    assert path.read_bytes() == BIG  # not the 1000 bytes plus the whole file
    assert server.requests == [("/big.bin", "bytes=1000-")]


def test_interrupted_download_without_range_support(server, tmp_path):
    url = server.serve("/big.bin", BIG)
    server.state.range_support = False
    server.state.cut_next = 1

    path = fetch_archive(Archive("big.bin", (url,), sha256(BIG)), tmp_path, progress=False, log=quiet)

    assert path.read_bytes() == BIG
    assert server.requests == [("/big.bin", None), ("/big.bin", f"bytes={len(BIG) // 2}-")]


# --------------------------------------------------------------------------------------------------------------------
# 5. extraction: formats, safety, atomicity


def test_extract_formats(tmp_path):
    members = {"root/x.txt": b"x", "root/sub/y.txt": b"y"}
    for name, data in [("a.tar.gz", make_tar_gz(members)), ("a.zip", make_zip(members))]:
        archive = tmp_path / name
        archive.write_bytes(data)
        dest = extract_archive(archive, tmp_path / f"out-{name}", log=quiet)
        assert (dest / "root/x.txt").read_bytes() == b"x" and (dest / "root/sub/y.txt").read_bytes() == b"y"
    single = tmp_path / "train-images-idx3-ubyte.gz"
    single.write_bytes(gzip.compress(BIG))
    dest = extract_archive(single, tmp_path / "out-gz", log=quiet)
    assert listing(dest) == ["train-images-idx3-ubyte"]
    assert (dest / "train-images-idx3-ubyte").read_bytes() == BIG


def test_extract_returns_an_existing_dest_as_is(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"new.txt": b"new"}))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("old")
    assert extract_archive(archive, tmp_path / "out", log=quiet) == tmp_path / "out"
    assert listing(tmp_path / "out") == ["old.txt"]


def _evil_tar(name: str) -> bytes:
    return make_tar_gz({"ok/first.txt": b"fine", name: b"evil"})


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("truncated.tar.gz", make_tar_gz({"ok/a.bin": BIG, "ok/b.bin": BIG})[:-5000]),
        ("garbage.tar.gz", b"this is not a gzip file at all"),
        ("dotdot.tar.gz", _evil_tar("../evil.txt")),
        ("inner-dotdot.tar.gz", _evil_tar("ok/../../evil.txt")),
        ("absolute.tar.gz", _evil_tar("/tmp/tada-evil.txt")),
        ("dotdot.zip", make_zip({"ok/first.txt": b"fine", "../evil.txt": b"evil"})),
        ("truncated.gz", gzip.compress(BIG)[:-1000]),
    ],
)
def test_failed_extraction_leaves_no_dest_and_no_temporary_directory(tmp_path, name, data):
    archive = tmp_path / "archives" / name
    archive.parent.mkdir()
    archive.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(DownloadError, match="refusing|cannot extract") as caught:
        extract_archive(archive, out / "dataset", log=quiet)

    assert str(archive) in str(caught.value)
    assert listing(out) == []
    assert listing(tmp_path) == ["archives", "out"]  # nothing escaped the extraction directory
    assert listing(tmp_path / "archives") == [name]


def test_failed_extraction_in_ensure_dataset_leaves_no_dest(server, tmp_path):
    good = make_zip({"images/a.txt": b"a"})
    bad = _evil_tar("../evil.txt")
    archives = [Archive("good.zip", (server.serve("/good.zip", good),), sha256(good)),
                Archive("bad.tar.gz", (server.serve("/bad.tar.gz", bad),), sha256(bad))]

    with pytest.raises(DownloadError, match="refusing"):
        ensure_dataset(archives, tmp_path / "cache", tmp_path / "data" / "ds", progress=False, log=quiet)

    assert listing(tmp_path / "data") == []
    assert listing(tmp_path / "cache") == ["bad.tar.gz", "good.zip"]  # verified downloads are kept


# --------------------------------------------------------------------------------------------------------------------
# 6. mirror, local_path, cache


def test_mirror_replaces_the_official_urls(server, tmp_path, closed_port_url):
    data = make_zip({"a.txt": b"a"})
    server.serve("/mirror/a.zip", data)
    archive = Archive("a.zip", (closed_port_url, server.base + "/official/a.zip"), sha256(data))

    path = fetch_archive(archive, tmp_path, mirror=server.base + "/mirror/", progress=False, log=quiet)

    assert path.read_bytes() == data
    assert server.requests == [("/mirror/a.zip", None)]


def test_local_path_is_verified_and_copied(server, tmp_path, closed_port_url):
    data = make_zip({"a.txt": b"a"})
    local = tmp_path / "usb" / "a.zip"
    local.parent.mkdir()
    local.write_bytes(data)
    archive = Archive("a.zip", (closed_port_url,), sha256(data))

    dest = ensure_dataset([archive], tmp_path / "cache", tmp_path / "ds", local_paths={"a.zip": local},
                          progress=False, log=quiet)

    assert (dest / "a.txt").read_bytes() == b"a"
    assert (tmp_path / "cache" / "a.zip").read_bytes() == data
    assert local.exists()  # copied, not moved
    assert server.requests == []


def test_local_path_with_wrong_checksum_names_the_file(tmp_path, closed_port_url):
    local = tmp_path / "a.zip"
    local.write_bytes(b"not the archive")
    archive = Archive("a.zip", (closed_port_url,), sha256(b"the archive"))

    with pytest.raises(DownloadError) as caught:
        fetch_archive(archive, tmp_path / "cache", local_path=local, progress=False, log=quiet)

    message = str(caught.value)
    assert str(local) in message
    assert f"sha256 expected {sha256(b'the archive')}, got {sha256(b'not the archive')}" in message
    assert listing(tmp_path / "cache") == []


def test_verified_cached_archive_is_used_without_network(tmp_path, closed_port_url):
    data = make_zip({"a.txt": b"a"})
    (tmp_path / "a.zip").write_bytes(data)
    path = fetch_archive(Archive("a.zip", (closed_port_url,), sha256(data)), tmp_path, progress=False, log=quiet)
    assert path == tmp_path / "a.zip"


def test_cached_archive_with_wrong_checksum_is_reported_not_deleted(server, tmp_path):
    data = make_zip({"a.txt": b"a"})
    url = server.serve("/a.zip", data)
    cached = tmp_path / "a.zip"
    cached.write_bytes(b"something else")

    with pytest.raises(DownloadError) as caught:
        fetch_archive(Archive("a.zip", (url,), sha256(data)), tmp_path, progress=False, log=quiet)

    assert str(cached) in str(caught.value) and "expected" in str(caught.value)
    assert cached.read_bytes() == b"something else"
    assert server.requests == []


# --------------------------------------------------------------------------------------------------------------------
# 7. every URL failing


def test_all_urls_failing_lists_each_url(server, tmp_path, closed_port_url):
    missing = server.base + "/missing.tar.gz"
    archive = Archive("x.tar.gz", (missing, closed_port_url), sha256(b"x"))

    with pytest.raises(DownloadError) as caught:
        fetch_archive(archive, tmp_path / "cache", progress=False, log=quiet, attempts=2)

    message = str(caught.value)
    assert f"{missing}: HTTP 404" in message
    assert f"{closed_port_url}: " in message and "refused" in message.lower()
    assert str(tmp_path / "cache" / "x.tar.gz") in message and "local_path" in message
    assert server.requests == [("/missing.tar.gz", None)]  # a 404 is not retried
    assert listing(tmp_path / "cache") == []


def test_a_failing_official_url_falls_back_to_the_next(server, tmp_path, closed_port_url):
    url = server.serve("/mirror/big.bin", BIG)
    path = fetch_archive(Archive("big.bin", (closed_port_url, url), sha256(BIG)), tmp_path, progress=False, log=quiet)
    assert path.read_bytes() == BIG


# --------------------------------------------------------------------------------------------------------------------
# 8. ensure_dataset: merging and reuse


def test_ensure_dataset_merges_archives_and_reuses_the_result(server, tmp_path):
    tar = make_tar_gz({"digits/train/0.txt": b"zero", "digits/README": b"readme"})
    zipped = make_zip({"digits/test/1.txt": b"one"})
    labels = gzip.compress(b"labels")
    mat = b"MATLAB 5.0 MAT-file"
    archives = [
        Archive("train.tar.gz", (server.serve("/train.tar.gz", tar),), sha256(tar)),
        Archive("test.zip", (server.serve("/test.zip", zipped),), sha256(zipped)),
        Archive("labels.gz", (server.serve("/labels.gz", labels),), sha256(labels)),
        Archive("extra.mat", (server.serve("/extra.mat", mat),), sha256(mat), extract=False),
    ]
    cache, dest = tmp_path / "cache", tmp_path / "data" / "digits"

    assert ensure_dataset(archives, cache, dest, progress=False, log=quiet) == dest
    assert listing(dest) == [MARKER, "digits", "extra.mat", "labels"]
    assert (dest / "digits/train/0.txt").read_bytes() == b"zero"
    assert (dest / "digits/test/1.txt").read_bytes() == b"one"
    assert (dest / "labels").read_bytes() == b"labels"
    assert (dest / "extra.mat").read_bytes() == mat
    requests = len(server.requests)
    assert requests == 4

    for path in cache.iterdir():  # even without the cached archives: the marker is enough
        path.unlink()
    logged: list[str] = []
    assert ensure_dataset(archives, cache, dest, progress=False, log=logged.append) == dest
    assert len(server.requests) == requests
    assert any("reusing" in line for line in logged)
    assert listing(tmp_path / "data") == ["digits"]


def test_ensure_dataset_rebuilds_when_the_marker_lists_other_archives(server, tmp_path):
    old, new = make_zip({"v1.txt": b"1"}), make_zip({"v2.txt": b"2"})
    dest = tmp_path / "ds"
    ensure_dataset([Archive("d.zip", (server.serve("/v1/d.zip", old),), sha256(old))], tmp_path / "c1", dest,
                   progress=False, log=quiet)
    ensure_dataset([Archive("d.zip", (server.serve("/v2/d.zip", new),), sha256(new))], tmp_path / "c2", dest,
                   progress=False, log=quiet)
    assert listing(dest) == [MARKER, "v2.txt"]
    assert listing(tmp_path) == ["c1", "c2", "ds"]


def test_ensure_dataset_refuses_a_dest_it_did_not_build(server, tmp_path):
    data = make_zip({"a.txt": b"a"})
    dest = tmp_path / "ds"
    dest.mkdir()
    (dest / "mine.txt").write_text("user data")
    with pytest.raises(DownloadError, match="no .tada-complete marker"):
        ensure_dataset([Archive("a.zip", (server.serve("/a.zip", data),), sha256(data))], tmp_path / "c", dest,
                       progress=False, log=quiet)
    assert listing(dest) == ["mine.txt"]
    assert server.requests == []


def test_archives_providing_the_same_file_clash(server, tmp_path):
    one, two = make_zip({"same.txt": b"1"}), make_tar_gz({"same.txt": b"2"})
    archives = [Archive("one.zip", (server.serve("/one.zip", one),), sha256(one)),
                Archive("two.tar.gz", (server.serve("/two.tar.gz", two),), sha256(two))]
    with pytest.raises(DownloadError, match="already extracted"):
        ensure_dataset(archives, tmp_path / "cache", tmp_path / "data" / "ds", progress=False, log=quiet)
    assert listing(tmp_path / "data") == []


def test_archive_validates_its_fields():
    with pytest.raises(ValueError, match="plain file name"):
        Archive("../x.zip", (), None)
    with pytest.raises(ValueError, match="not a hex digest"):
        Archive("x.zip", (), "abc")
    archive = Archive("x.zip", ["http://a/x.zip"], "AB" * 32)  # type: ignore[arg-type]
    assert archive.urls == ("http://a/x.zip",) and archive.sha256 == "ab" * 32

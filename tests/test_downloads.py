"""Tests for kerastl.net, against a local HTTP server: no internet, no TensorFlow."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import stat
import tarfile
import threading
import time
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kerastl.errors import KerastlError, UsageError
from kerastl.net import (
    cache_dir,
    cache_path,
    download,
    extract_archive,
    fetch,
    fetch_and_extract,
    is_offline,
    sha256_file,
)

BODY = bytes(range(256)) * 1024  # 256 KiB: several read chunks, so drops land mid-transfer.
BODY_SHA = hashlib.sha256(BODY).hexdigest()


# --------------------------------------------------------------------------------------------------
# A local HTTP server whose behaviour each test scripts


class _Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        # path -> byte counts: the n-th request for path sends its headers (with the full
        # Content-Length) and then only that many body bytes before closing the connection.
        self.drops: dict[str, list[int]] = {}
        self.ignore_range: set[str] = set()
        self.delay = 0.0
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server_state: _Server  # set on a subclass per server

    def log_message(self, format, *args):
        pass  # keep pytest output clean

    def do_GET(self):
        state = self.server_state
        path = urllib.parse.urlsplit(self.path).path
        with state.lock:
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
            drop = state.drops[path].pop(0) if state.drops.get(path) else None
        if state.delay:
            time.sleep(state.delay)
        body = state.files.get(path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        range_header = self.headers.get("Range")
        if range_header and path not in state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
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
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        # HTTP/1.0 (the handler's default) closes the connection when this method returns, so a
        # drop is simply writing fewer bytes than Content-Length announced.
        self.wfile.write(payload if drop is None else payload[:drop])


@pytest.fixture
def server():
    state = _Server()
    handler = type("Handler", (_Handler,), {"server_state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    state.httpd = httpd
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KERASTL_OFFLINE", raising=False)
    # A proxy from the environment must not get between us and 127.0.0.1.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    # Keep retries instant.
    monkeypatch.setattr(download, "_RETRY_PAUSE", 0)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------------
# Environment and cache layout


def test_cache_dir_prefers_kerastl_cache_then_xdg(monkeypatch, tmp_path):
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("KERASTL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "kerastl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "kerastl"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), (" True ", True), ("0", False), ("", False)],
)
def test_is_offline(monkeypatch, value, expected):
    monkeypatch.setenv("KERASTL_OFFLINE", value)
    assert is_offline() is expected


def test_cache_path_layout_names_and_collisions(tmp_path):
    a = cache_path("https://example.com/a/weights.h5?token=secret&x=1")
    b = cache_path("https://mirror.example.org/b/weights.h5")
    assert a.name == b.name == "weights.h5"
    assert a != b  # same basename, different URL: a different hash folder
    assert a.parent.parent == tmp_path / "cache" / "downloads"
    assert re.fullmatch(r"[0-9a-f]{16}", a.parent.name)
    assert "secret" not in str(a) and "?" not in str(a)
    # Fragments are never sent, so they do not make a different file.
    assert cache_path("https://example.com/a/weights.h5#frag") == cache_path(
        "https://example.com/a/weights.h5"
    )
    assert cache_path("https://x.org/m%20odel v1.tar.gz").name == "m_odel_v1.tar.gz"
    assert cache_path("https://x.org/a/..%2F..%2Fetc%2Fpasswd").name == "passwd"
    assert cache_path("https://x.org/").name == "download"
    assert cache_path("https://x.org/f.part").name == "f.part_"
    assert len(cache_path("https://x.org/" + "n" * 500 + ".h5").name) <= 128
    custom = cache_path(
        "https://x.org/5?tf-hub-format=compressed", subdir="hub/v1", filename="m.tgz"
    )
    assert custom.relative_to(tmp_path / "cache").parts[:2] == ("hub", "v1")
    assert custom.name == "m.tgz"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://x.org/f"},
        {"url": "not a url"},
        {"url": "https://x.org/f", "subdir": "../out"},
        {"url": "https://x.org/f", "subdir": "/abs"},
        {"url": "https://x.org/f", "filename": "a/b"},
        {"url": "https://x.org/f", "filename": ".."},
        {"url": "https://x.org/f", "filename": "f.lock"},
    ],
)
def test_cache_path_rejects_bad_arguments(kwargs):
    with pytest.raises(UsageError):
        cache_path(**kwargs)


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(BODY)
    assert sha256_file(path) == BODY_SHA


# --------------------------------------------------------------------------------------------------
# fetch


def test_fetch_good_file_is_verified_then_served_from_cache(server):
    server.files["/w/weights.h5"] = BODY
    url = server.url("/w/weights.h5")
    seen = []

    path = fetch(
        url, sha256=BODY_SHA.upper(), progress=lambda done, total: seen.append((done, total))
    )

    assert path == cache_path(url)
    assert path.read_bytes() == BODY
    assert _leftovers(path.parent) == ["weights.h5", "weights.h5.lock"]  # no .part
    assert seen[0] == (0, len(BODY)) and seen[-1] == (len(BODY), len(BODY))
    assert server.paths() == ["/w/weights.h5"]

    assert fetch(url, sha256=BODY_SHA) == path
    assert fetch(url, sha256=BODY_SHA, offline=True) == path
    assert len(server.requests) == 1  # both later calls were served from the cache


def test_fetch_hash_mismatch_deletes_the_file_and_says_so(server):
    server.files["/w/bad.h5"] = BODY[:-1] + b"X"
    url = server.url("/w/bad.h5")
    got = hashlib.sha256(server.files["/w/bad.h5"]).hexdigest()

    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA)

    message = _one_line(exc)
    assert "sha256 mismatch" in message and url in message
    assert f"expected {BODY_SHA}" in message and f"got {got}" in message
    final = cache_path(url)
    assert not final.exists() and not final.with_name("bad.h5.part").exists()


def test_fetch_replaces_a_corrupted_cached_file(server):
    server.files["/w/weights.h5"] = BODY
    url = server.url("/w/weights.h5")
    final = cache_path(url)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"tampered")

    assert fetch(url, sha256=BODY_SHA).read_bytes() == BODY
    assert len(server.requests) == 1


def test_truncated_transfer_resumes_with_a_range_request(server):
    server.files["/w/big.bin"] = BODY
    server.drops["/w/big.bin"] = [100_000]
    url = server.url("/w/big.bin")

    path = fetch(url, sha256=BODY_SHA)

    assert path.read_bytes() == BODY
    assert [r["range"] for r in server.requests] == [None, "bytes=100000-"]
    assert not path.with_name("big.bin.part").exists()


def test_transfer_that_keeps_failing_keeps_the_part_for_the_next_call(server):
    server.files["/w/big.bin"] = BODY
    server.drops["/w/big.bin"] = [1000, 1000, 1000]  # every attempt of the first call drops
    url = server.url("/w/big.bin")
    final = cache_path(url)

    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA)

    message = _one_line(exc)
    assert url in message and str(final) in message and "connection closed" in message
    assert not final.exists()
    assert final.with_name("big.bin.part").stat().st_size == 3000

    assert fetch(url, sha256=BODY_SHA).read_bytes() == BODY
    assert [r["range"] for r in server.requests] == [
        None,
        "bytes=1000-",
        "bytes=2000-",
        "bytes=3000-",
    ]


def test_server_that_ignores_range_restarts_cleanly(server):
    server.files["/w/big.bin"] = BODY
    server.ignore_range.add("/w/big.bin")
    url = server.url("/w/big.bin")
    part = cache_path(url).with_name("big.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not the start of the file")

    path = fetch(url, sha256=BODY_SHA)

    assert path.read_bytes() == BODY
    assert (
        server.requests[0]["range"] == f"bytes={len(b'garbage that is not the start of the file')}-"
    )
    assert not part.exists()


def test_stale_part_that_breaks_the_hash_is_downloaded_again_from_scratch(server):
    server.files["/w/big.bin"] = BODY
    url = server.url("/w/big.bin")
    part = cache_path(url).with_name("big.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 5000)  # left over from a different version of the file

    assert fetch(url, sha256=BODY_SHA).read_bytes() == BODY
    assert [r["range"] for r in server.requests] == ["bytes=5000-", None]


def test_complete_part_left_by_a_crash_is_used_without_downloading_again(server):
    server.files["/w/big.bin"] = BODY
    url = server.url("/w/big.bin")
    part = cache_path(url).with_name("big.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(BODY)

    assert fetch(url, sha256=BODY_SHA).read_bytes() == BODY
    assert [r["range"] for r in server.requests] == [f"bytes={len(BODY)}-"]  # answered 416


def test_file_url_is_fetched_and_verified(tmp_path):
    source = tmp_path / "local weights.h5"
    source.write_bytes(BODY)
    url = source.as_uri()
    path = fetch(url, sha256=BODY_SHA)
    assert path.name == "local_weights.h5" and path.read_bytes() == BODY


def test_offline_without_a_cached_file_names_url_and_cache_path(server, monkeypatch):
    server.files["/w/weights.h5"] = BODY
    url = server.url("/w/weights.h5")
    monkeypatch.setenv("KERASTL_OFFLINE", "1")

    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA)

    message = _one_line(exc)
    assert url in message and str(cache_path(url)) in message and "offline" in message
    assert server.requests == []
    with pytest.raises(KerastlError, match="offline"):
        fetch(url, sha256=BODY_SHA, offline=True)


def test_offline_with_a_corrupted_cached_file_says_so(server):
    url = server.url("/w/weights.h5")
    final = cache_path(url)
    final.parent.mkdir(parents=True)
    final.write_bytes(b"tampered")

    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA, offline=True)

    message = _one_line(exc)
    assert "sha256" in message and BODY_SHA in message and str(final) in message
    assert not final.exists()


def test_unreachable_host_names_url_and_cache_path():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now, so the connection is refused at once.
    url = f"http://127.0.0.1:{port}/w/weights.h5"

    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA, timeout=5)

    message = _one_line(exc)
    assert url in message and str(cache_path(url)) in message
    assert not cache_path(url).exists()


def test_http_error_is_one_line_with_status(server):
    url = server.url("/missing.h5")
    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA)
    message = _one_line(exc)
    assert "HTTP 404" in message and url in message and str(cache_path(url)) in message
    assert len(server.requests) == 1  # a 404 is not retried


def test_password_in_url_is_not_shown(server):
    url = server.url("/missing.h5").replace("http://", "http://user:hunter2@")
    with pytest.raises(KerastlError) as exc:
        fetch(url, sha256=BODY_SHA)
    assert "hunter2" not in str(exc.value) and "user:***@" in str(exc.value)


def test_bad_sha256_argument_is_a_usage_error(server):
    with pytest.raises(UsageError):
        fetch(server.url("/w/x"), sha256="abc")


def test_concurrent_fetches_download_once(server):
    server.files["/w/big.bin"] = BODY
    server.delay = 0.3
    url = server.url("/w/big.bin")
    results, errors = [], []

    def worker():
        try:
            results.append(fetch(url, sha256=BODY_SHA))
        except Exception as exc:  # noqa: BLE001 - any failure is reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert errors == []
    assert len(results) == 3 and all(p.read_bytes() == BODY for p in results)
    assert len(server.requests) == 1


# --------------------------------------------------------------------------------------------------
# extract_archive


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _file(name: str, data: bytes = b"data", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def _assert_refused(archive: Path, dest: Path, fragment: str) -> None:
    before = _leftovers(dest.parent)
    with pytest.raises(KerastlError) as exc:
        extract_archive(archive, dest)
    message = _one_line(exc)
    assert "refusing" in message and fragment in message
    assert not dest.exists()
    assert _leftovers(dest.parent) == before  # no temporary directory left either


def test_extracts_a_good_tar_gz(tmp_path):
    archive = _tar(
        tmp_path / "model.tar.gz",
        [
            _file("./saved_model.pb", b"graph"),
            _file("./variables/variables.index", b"index"),
            _file("./bin/run.sh", b"#!/bin/sh\n", mode=0o4755),  # setuid must not survive
            _link("./latest", "variables/variables.index"),
            _link("./copy.pb", "saved_model.pb", kind=tarfile.LNKTYPE),
        ],
        mode="w:gz",
    )
    dest = tmp_path / "out"

    assert extract_archive(archive, dest) == dest

    assert (dest / "saved_model.pb").read_bytes() == b"graph"
    assert (dest / "variables" / "variables.index").read_bytes() == b"index"
    assert (dest / "latest").is_symlink() and (dest / "latest").read_bytes() == b"index"
    assert (dest / "copy.pb").read_bytes() == b"graph" and not (dest / "copy.pb").is_symlink()
    mode = (dest / "bin" / "run.sh").stat().st_mode
    assert mode & stat.S_IXUSR and not mode & (stat.S_ISUID | stat.S_ISGID)
    assert _leftovers(tmp_path) == ["model.tar.gz", "out"]


def test_extracts_a_good_zip_into_an_empty_directory(tmp_path):
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/weights.h5", b"w")
        zf.writestr("m/sub/", b"")
    dest = tmp_path / "out"
    dest.mkdir()

    extract_archive(archive, dest)

    assert (dest / "m" / "weights.h5").read_bytes() == b"w"
    assert (dest / "m" / "sub").is_dir()


def test_refuses_dot_dot_member(tmp_path):
    archive = _tar(tmp_path / "a.tar", [_file("ok.txt"), _file("sub/../../evil.txt")])
    _assert_refused(archive, tmp_path / "out", "'..'")
    assert not (tmp_path / "evil.txt").exists()


def test_refuses_absolute_member(tmp_path):
    archive = _tar(tmp_path / "a.tar", [_file(str(tmp_path / "abs_evil.txt"))])
    _assert_refused(archive, tmp_path / "out", "absolute path")
    assert not (tmp_path / "abs_evil.txt").exists()


def test_refuses_symlink_escaping_dest(tmp_path):
    archive = _tar(tmp_path / "a.tar", [_link("sub/escape", "../../outside")])
    _assert_refused(archive, tmp_path / "out", "outside the archive")


def test_refuses_absolute_symlink_and_writes_through_it(tmp_path):
    # The classic attack: a link to a directory outside, then a file written through the link.
    outside = tmp_path / "victim"
    outside.mkdir()
    archive = _tar(tmp_path / "a.tar", [_link("d", str(outside)), _file("d/pwned.txt")])
    _assert_refused(archive, tmp_path / "out", "absolute path")
    assert _leftovers(outside) == []


def test_refuses_symlinks_that_escape_only_through_each_other(tmp_path):
    # Each target looks inside on its own; together a -> b/.. -> ./.. is the parent of dest.
    archive = _tar(tmp_path / "a.tar", [_link("a", "b/.."), _link("b", ".")])
    _assert_refused(archive, tmp_path / "out", "resolves outside")


def test_refuses_hardlink_outside(tmp_path):
    archive = _tar(tmp_path / "a.tar", [_link("h", "../../etc/passwd", kind=tarfile.LNKTYPE)])
    _assert_refused(archive, tmp_path / "out", "'..'")


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [(tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"), (tarfile.FIFOTYPE, "FIFO")],
)
def test_refuses_device_and_fifo_members(tmp_path, kind, fragment):
    archive = _tar(tmp_path / "a.tar", [_file("ok.txt"), _special("dev", kind)])
    _assert_refused(archive, tmp_path / "out", fragment)


def test_refuses_zip_dot_dot_member(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", b"x")
    _assert_refused(archive, tmp_path / "out", "'..'")


def test_refuses_zip_symlink_escaping_dest(tmp_path):
    archive = tmp_path / "a.zip"
    info = zipfile.ZipInfo("link")
    info.create_system = 3  # Unix: the high 16 bits of external_attr are st_mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "../../etc")
    _assert_refused(archive, tmp_path / "out", "outside the archive")


def test_corrupt_and_unknown_archives_and_occupied_dest(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", [_file("f")], mode="w:gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[:30])
    with pytest.raises(KerastlError, match="corrupt"):
        extract_archive(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(KerastlError, match="not a tar"):
        extract_archive(text, tmp_path / "out")

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep").write_text("mine")
    with pytest.raises(KerastlError, match="already exists"):
        extract_archive(good, occupied)
    assert _leftovers(occupied) == ["keep"]


# --------------------------------------------------------------------------------------------------
# fetch_and_extract


def _hub_tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [("./saved_model.pb", b"graph"), ("./variables/variables.index", b"i")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_fetch_and_extract_tf_hub_style_url_and_reuse(server):
    tarball = _hub_tarball()
    server.files["/google/model/5"] = tarball
    url = server.url("/google/model/5?tf-hub-format=compressed")
    sha = hashlib.sha256(tarball).hexdigest()

    out = fetch_and_extract(url, sha256=sha)

    assert server.paths() == ["/google/model/5?tf-hub-format=compressed"]
    assert (out / "saved_model.pb").read_bytes() == b"graph"
    assert (out / "variables" / "variables.index").read_bytes() == b"i"
    assert out.parent == cache_path(url).parent
    marker = out.with_name(out.name + ".complete")
    assert marker.is_file()

    # Reused: no request, and the archive is not even needed any more.
    cache_path(url).unlink()
    assert fetch_and_extract(url, sha256=sha) == out
    assert fetch_and_extract(url, sha256=sha, offline=True) == out
    assert len(server.requests) == 1


def test_fetch_and_extract_redoes_an_unfinished_extraction(server):
    server.files["/m.tar.gz"] = _hub_tarball()
    url = server.url("/m.tar.gz")
    sha = hashlib.sha256(server.files["/m.tar.gz"]).hexdigest()
    out = fetch_and_extract(url, sha256=sha)
    # An extraction that died before its marker was written, with a stray file in it.
    out.with_name(out.name + ".complete").unlink()
    (out / "stray").write_text("x")

    assert fetch_and_extract(url, sha256=sha) == out

    assert not (out / "stray").exists() and (out / "saved_model.pb").is_file()
    assert len(server.requests) == 1  # the cached archive was unpacked again, not downloaded
    assert [p for p in _leftovers(out.parent) if p.endswith(".tmp")] == []


def test_fetch_and_extract_refuses_an_unsafe_archive(server):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    server.files["/evil.tgz"] = buffer.getvalue()
    url = server.url("/evil.tgz")

    with pytest.raises(KerastlError, match="refusing to unpack"):
        fetch_and_extract(url, sha256=hashlib.sha256(server.files["/evil.tgz"]).hexdigest())

    assert not cache_path(url).with_name("evil.tgz.extracted").exists()
    assert not any(p.name == "escape.txt" for p in Path(os.environ["KERASTL_CACHE"]).rglob("*"))


def test_fetch_and_extract_offline_names_url_and_path(server):
    url = server.url("/m.tar.gz")
    with pytest.raises(KerastlError) as exc:
        fetch_and_extract(url, sha256=BODY_SHA, offline=True)
    message = _one_line(exc)
    assert url in message and str(cache_path(url)) in message
    assert server.requests == []

"""Downloads are verified: https or a pin from outside the file, every redirect hop checked, archives bounded,
manifests confined to their directory, unpinned keras.applications weights recorded on first use (SECURITY.md).

Network tests use servers on 127.0.0.1 only; the https ones trust a self-signed certificate made with the
openssl CLI through SSL_CERT_FILE.
"""

import json
import shutil
from pathlib import Path

import pytest

from kerastl.errors import KerastlError

# ------------------------------------------------------------------------------------------------------------
# Manifests name files inside their directory only


def _manifest(folder, backbone, weights_file):
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": "t", "modality": "image", "input": {"shape": [16, 16, 3]},
                "preprocessing": {"mode": "scale", "scale": 1 / 255}, "feature_width": 16,
                "weights": {"file": weights_file}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("name", ["../outside.keras", "sub/../../outside.keras", "/abs/outside.keras",
                                  "link.keras", "~/outside.keras"])
def test_manifest_weights_file_must_stay_inside_its_directory(tmp_path, tiny_backbone_path, name):
    from kerastl.backbones import load_backbone

    # A real model file outside the backbone's directory, where each name would lead.
    outside = tmp_path / "release" / "outside.keras"
    folder = _manifest(tmp_path / "release" / "tiny", tiny_backbone_path,
                       str(outside) if name.startswith("/abs") else name)
    shutil.copy(tiny_backbone_path, outside)
    (folder / "sub").mkdir()
    (folder / "link.keras").symlink_to(outside)
    with pytest.raises(KerastlError, match="outside its directory") as error:
        load_backbone(str(folder))
    assert "\n" not in str(error.value)


def test_manifest_weights_file_inside_its_directory_loads(tmp_path, tiny_backbone_path):
    from kerastl.backbones import load_backbone

    folder = _manifest(tmp_path / "tiny", tiny_backbone_path, "weights/backbone.keras")
    (folder / "weights").mkdir()
    shutil.copy(tiny_backbone_path, folder / "weights" / "backbone.keras")
    assert load_backbone(str(folder)).feature_width == 16


# ------------------------------------------------------------------------------------------------------------
# Local servers: plain http, and https with a self-signed certificate the client trusts through SSL_CERT_FILE


class _Server:
    """Serves `files` (path -> bytes) and `redirects` (path -> Location); records (Host header, path)."""

    def __init__(self, context=None):
        import http.server
        import ssl
        import threading

        self.files, self.redirects, self.requests = {}, {}, []
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?")[0]
                state.requests.append((self.headers.get("Host", "").split(":")[0], self.path))
                if path in state.redirects:
                    self.send_response(302)
                    self.send_header("Location", state.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = state.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        assert isinstance(context, (ssl.SSLContext, type(None)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path, host="127.0.0.1"):
        return f"{self.scheme}://{host}:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    import subprocess

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def network(monkeypatch, tmp_path):
    monkeypatch.setenv("KERASTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KERASTL_OFFLINE", raising=False)
    monkeypatch.delenv("KERASTL_TRUSTED_HUB_HOSTS", raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def http_server(network):
    server = _Server()
    yield server
    server.close()


@pytest.fixture
def https_server(network, certificate, monkeypatch):
    import ssl

    cert, key = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _Server(context)
    yield server
    server.close()


def _sha(data):
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _tarball(files):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------
# https, or a pin


def test_unpinned_http_and_file_urls_are_refused_before_any_request(http_server, tmp_path):
    from kerastl.backbones import load_backbone
    from kerastl.backbones.hub_layer import resolve_handle
    from kerastl.net import fetch, fetch_and_extract

    http_server.files["/w.bin"] = b"weights"
    local = tmp_path / "w.bin"
    local.write_bytes(b"weights")
    attempts = [
        lambda: fetch(http_server.url("/w.bin")),
        lambda: fetch(local.as_uri()),
        lambda: fetch_and_extract(http_server.url("/w.bin")),
        lambda: load_backbone(f"url:{http_server.url('/w.bin')}"),
        lambda: resolve_handle(http_server.url("/w.bin")),
    ]
    for attempt in attempts:
        with pytest.raises(KerastlError, match=r"without a sha256 pin.*https://.*#sha256=") as error:
            attempt()
        assert "\n" not in str(error.value)
    assert http_server.requests == []
    # Pinned, the same http URL is fine: the pin came from whoever named the URL, not from the file.
    assert fetch(http_server.url("/w.bin"), sha256=_sha(b"weights")).read_bytes() == b"weights"


def test_unpinned_https_is_fetched(https_server):
    from kerastl.net import fetch

    https_server.files["/w.bin"] = b"weights"
    assert fetch(https_server.url("/w.bin")).read_bytes() == b"weights"


def test_https_redirect_to_http_is_refused_unless_pinned(https_server, http_server):
    from kerastl.net import fetch

    http_server.files["/w.bin"] = b"weights"
    https_server.redirects["/w.bin"] = http_server.url("/w.bin")
    with pytest.raises(KerastlError, match="refusing a redirect to http://") as error:
        fetch(https_server.url("/w.bin"))
    assert "\n" not in str(error.value)
    assert http_server.requests == []  # refused before the downgraded request was sent
    assert fetch(https_server.url("/w.bin"), sha256=_sha(b"weights")).read_bytes() == b"weights"


def test_every_redirect_hop_is_checked_against_the_trusted_hub_hosts(https_server, monkeypatch):
    """KERASTL_TRUSTED_HUB_HOSTS once checked only the URL given; a trusted host could redirect anywhere."""
    from kerastl.backbones.hub_layer import resolve_handle

    https_server.files["/module.tar.gz"] = _tarball({"saved_model.pb": b"graph"})
    https_server.redirects["/google/m/1"] = https_server.url("/module.tar.gz", host="localhost")
    monkeypatch.setenv("KERASTL_TRUSTED_HUB_HOSTS", "127.0.0.1")
    with pytest.raises(KerastlError, match="'localhost' is not in KERASTL_TRUSTED_HUB_HOSTS") as error:
        resolve_handle(https_server.url("/google/m/1"))
    assert "\n" not in str(error.value)
    assert [host for host, _ in https_server.requests] == ["127.0.0.1"]
    # A redirect that stays on a trusted host is followed.
    monkeypatch.setenv("KERASTL_TRUSTED_HUB_HOSTS", "127.0.0.1,localhost")
    assert (Path(resolve_handle(https_server.url("/google/m/1"))) / "saved_model.pb").read_bytes() == b"graph"


def test_hub_handles_take_a_sha256_pin(http_server):
    from kerastl.backbones.hub_layer import resolve_handle
    from kerastl.errors import UsageError

    tarball = _tarball({"saved_model.pb": b"graph"})
    http_server.files["/m"] = tarball
    with pytest.raises(KerastlError, match="sha256 mismatch"):
        resolve_handle(http_server.url("/m") + "#sha256=" + "0" * 64)
    local = resolve_handle(http_server.url("/m") + "#sha256=" + _sha(tarball))
    assert (Path(local) / "saved_model.pb").read_bytes() == b"graph"
    # The fragment is not sent, and TF-Hub's format query goes on the URL, not after the fragment.
    assert http_server.requests[-1] == ("127.0.0.1", "/m?tf-hub-format=compressed")
    with pytest.raises(UsageError, match="#sha256=<64 hex digits>"):
        resolve_handle(http_server.url("/m") + "#md5=abc")


# ------------------------------------------------------------------------------------------------------------
# Trust on first use for files nobody pins (keras.applications weights without a hash)


def test_keras_weights_without_a_hash_are_recorded_and_a_changed_file_refused(https_server):
    from keras.src.utils import file_utils

    from kerastl.backbones import _keras_downloads_through_cache

    https_server.files["/w/mobilenet.h5"] = b"first"
    url = https_server.url("/w/mobilenet.h5")
    with _keras_downloads_through_cache():
        # As keras.applications.MobileNetV2 calls it: no file_hash.
        path = Path(file_utils.get_file("mobilenet.h5", url, cache_subdir="models"))
        assert path.read_bytes() == b"first"
        record = path.with_name(path.name + ".sha256")
        assert json.loads(record.read_text())["sha256"] == _sha(b"first")
        assert Path(file_utils.get_file("mobilenet.h5", url, cache_subdir="models")) == path

        # The cached file changed under us: refused, not used.
        path.write_bytes(b"tampered")
        with pytest.raises(KerastlError, match="changed since it was first downloaded") as error:
            file_utils.get_file("mobilenet.h5", url, cache_subdir="models")
        assert "\n" not in str(error.value) and str(record) in str(error.value)

        # The server's file changed: the new download is refused too, and does not replace the cache.
        path.unlink()
        https_server.files["/w/mobilenet.h5"] = b"second"
        with pytest.raises(KerastlError, match="changed since it was first downloaded"):
            file_utils.get_file("mobilenet.h5", url, cache_subdir="models")
        assert not path.exists()

        # Deleting both, as the message says, accepts the new file.
        record.unlink()
        assert Path(file_utils.get_file("mobilenet.h5", url, cache_subdir="models")).read_bytes() == b"second"


# ------------------------------------------------------------------------------------------------------------
# Archive limits


def test_archive_extraction_has_a_size_and_a_member_limit(tmp_path, monkeypatch):
    from kerastl.errors import UsageError
    from kerastl.net import extract_archive

    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tarball({"a": b"x" * 600, "b": b"y" * 600, "c": b""}))
    with pytest.raises(KerastlError, match="more than 1000 bytes.*KERASTL_MAX_EXTRACT_BYTES") as error:
        extract_archive(archive, tmp_path / "out", max_bytes=1000)
    assert "\n" not in str(error.value)
    monkeypatch.setenv("KERASTL_MAX_EXTRACT_MEMBERS", "2")
    with pytest.raises(KerastlError, match="more than 2 members.*KERASTL_MAX_EXTRACT_MEMBERS"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar.gz"]  # no half-unpacked tree left
    monkeypatch.setenv("KERASTL_MAX_EXTRACT_MEMBERS", "lots")
    with pytest.raises(UsageError, match="KERASTL_MAX_EXTRACT_MEMBERS='lots'"):
        extract_archive(archive, tmp_path / "out")
    monkeypatch.setenv("KERASTL_MAX_EXTRACT_MEMBERS", "3")
    assert (extract_archive(archive, tmp_path / "out", max_bytes=1200) / "b").read_bytes() == b"y" * 600


def test_zip_members_count_against_the_size_limit(tmp_path):
    """The limit counts the bytes written (a zip's declared sizes are the archive's word), zip as tar."""
    import zipfile

    from kerastl.net import extract_archive

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big", b"\0" * 50_000)
    with pytest.raises(KerastlError, match="more than 10000 bytes"):
        extract_archive(archive, tmp_path / "out", max_bytes=10_000)

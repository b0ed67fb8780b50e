"""Tests for modelapi.core.fetch: address checks, URL checks, fetching, data URIs, decoding.

Every socket here is on the loopback interface. Names that would need DNS are never handed
to the system resolver: tests that need one inject ``FetchPolicy.resolver``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import anyio
import pytest
import skimage
from PIL import Image, ImageFile

from conftest import Listener
from modelapi.errors import InputError
from modelapi.core.fetch import (
    FetchPolicy,
    check_url,
    check_url_async,
    decode_image,
    fetch,
    is_metadata_address,
    is_public_address,
    load_image,
    open_image,
    read_data_uri,
    sniff_format,
)

DATA_DIR = os.path.join(os.path.dirname(skimage.__file__), "data")
LOC = ["body", "images", 2]


def _data(name: str) -> bytes:
    with open(os.path.join(DATA_DIR, name), "rb") as f:
        return f.read()


ASTRONAUT = _data("astronaut.png")
CHELSEA = _data("chelsea.png")
ROCKET = _data("rocket.jpg")


def _local(**kw: object) -> FetchPolicy:
    """A policy that may reach the loopback test servers, with short timeouts."""
    defaults = dict(allow_private=True, connect_timeout_s=2.0, read_timeout_s=2.0)
    return FetchPolicy(**{**defaults, **kw})  # type: ignore[arg-type]


def fetch_bytes(url: str, policy: FetchPolicy, *, loc: list) -> bytes:
    """:func:`fetch` run on an event loop of its own, in a thread (this one may run a loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, functools.partial(fetch, url, policy, loc=loc)).result()


def _refused(fn, *args, type: str, **kw) -> InputError:  # noqa: A002
    with pytest.raises(InputError) as info:
        fn(*args, **kw)
    assert info.value.type == type, info.value.to_detail()
    return info.value


# -- servers -------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes: /img/<file>, /redirect/<n>, /relative, /to?url=<u>, /status/<code>,
    /big-length, /big-stream, /slow, /drip, /echo-host."""

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k.replace("_", "-"), v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # client gave up
            self._route(parts, parse_qs(query))

    def _route(self, parts: list[str], query: dict[str, list[str]]) -> None:
        if parts[0] == "img":
            self._send(200, _data(parts[1]), Content_Type="image/png")
        elif parts[0] == "redirect":
            n = int(parts[1])
            self._send(302, Location=f"/redirect/{n - 1}") if n else self._send(200, ASTRONAUT)
        elif parts[0] == "relative":
            self._send(302, Location="img/chelsea.png")
        elif parts[0] == "to":
            self._send(302, Location=query["url"][0])
        elif parts[0] == "status":
            self._send(int(parts[1]), b"nope")
        elif parts[0] == "echo-host":
            self._send(200, self.headers["Host"].encode())
        elif parts[0] == "big-length":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"\0" * 1024)
        elif parts[0] == "big-stream":  # no Content-Length: delimited by close (HTTP/1.0)
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
        elif parts[0] == "slow":
            time.sleep(1.5)
            self._send(200, ASTRONAUT)
        elif parts[0] == "drip":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self._send(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# -- is_public_address ---------------------------------------------------------------------

NOT_PUBLIC = [
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.0.1", "0.0.0.0", "0.1.2.3",
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "198.18.0.1",
    "198.19.255.1", "192.0.2.1", "198.51.100.7", "203.0.113.9", "192.0.0.8",
    "::1", "::", "::127.0.0.1", "::8.8.8.8", "fc00::1", "fd12::1", "fe80::1", "fec0::1",
    "ff02::1", "2001:db8::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::808:808", "2002:a00:1::",
    "2002:7f00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "100::1",
]  # fmt: skip
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_is_public_address_refuses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_is_public_address_accepts(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is True


# -- check_url -----------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/", "http://localhost:{port}/", "http://LocalHost:{port}/",
    "http://[::1]:{port}/", "http://[::ffff:127.0.0.1]:{port}/", "http://[::ffff:7f00:1]:{port}/",
    "http://[::127.0.0.1]:{port}/", "http://0.0.0.0:{port}/", "http://0:{port}/",
    "http://[::]:{port}/", "http://2130706433:{port}/", "http://0x7f000001:{port}/",
    "http://017700000001:{port}/", "http://127.1:{port}/", "http://0x7f.1:{port}/",
    "https://127.0.0.1:{port}/", "http://127.0.0.1:{port}/redirect/0?x=1#frag",
]  # fmt: skip


def test_loopback_spellings_are_refused_without_connecting(listener: Listener) -> None:
    policy = FetchPolicy(connect_timeout_s=1.0)
    for spelling in LOOPBACK_SPELLINGS:
        url = spelling.format(port=listener.port)
        _refused(check_url, url, policy, type="url_forbidden")
        _refused(fetch_bytes, url, policy, loc=LOC, type="url_forbidden")
    assert listener.connections() == 0
    socket.create_connection(("127.0.0.1", listener.port)).close()  # the listener does count
    assert listener.connections() == 1


def test_userinfo_is_refused_even_when_private_is_allowed(listener: Listener) -> None:
    spellings = ["http://example.com@127.0.0.1:{port}/", "http://user:pw@localhost:{port}/"]
    for policy in [FetchPolicy(), _local()]:
        for spelling in spellings:
            url = spelling.format(port=listener.port)
            err = _refused(check_url, url, policy, type="url_forbidden")
            assert "credentials" in err.msg
            _refused(fetch_bytes, url, policy, loc=LOC, type="url_forbidden")
    assert listener.connections() == 0


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://x/",
        "gopher://127.0.0.1:70/",
        "dict://127.0.0.1:11211/",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
    ],
)
def test_other_schemes_are_refused(url: str) -> None:
    err = _refused(check_url, url, _local(), type="url_forbidden")
    assert f"'{url.split(':')[0]}'" in err.msg
    _refused(fetch_bytes, url, _local(), loc=LOC, type="url_forbidden")


@pytest.mark.parametrize("url", ["", "not a url", "//127.0.0.1/x", "http://", "http://[::1/"])
def test_malformed_urls_are_refused(url: str) -> None:
    _refused(check_url, url, _local(), type="url_invalid")


def _no_such_host(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def _hanging_resolver(host: str, port: int) -> list[str]:
    time.sleep(3)
    return ["8.8.8.8"]


def test_unresolvable_and_hanging_names_fail_fast() -> None:
    _refused(
        check_url,
        "http://example.com/",
        FetchPolicy(resolver=_no_such_host),
        type="url_unresolvable",
    )
    # The resolver never returns: only the connect timeout can end the wait.
    policy = FetchPolicy(resolver=_hanging_resolver, connect_timeout_s=0.2)
    err = _refused(check_url, "https://example.com/x.png", policy, type="url_unresolvable")
    assert "example.com" in err.msg


def test_every_resolved_address_must_be_public() -> None:
    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    _refused(
        check_url, "https://images.example/a.png", FetchPolicy(resolver=mixed), type="url_forbidden"
    )
    url, addrs = check_url(
        "https://images.example/a.png", FetchPolicy(resolver=lambda h, p: ["8.8.8.8"])
    )
    assert url.host == "images.example" and addrs == [ipaddress.ip_address("8.8.8.8")]


# -- cloud metadata ------------------------------------------------------------------------
# Checked by check_url only: it makes no connection, so nothing here can reach a real endpoint.

METADATA = [
    "169.254.169.254", "169.254.170.2", "169.254.170.23", "169.254.0.23", "fd00:ec2::254",
    "fd00:ec2::23", "100.100.100.200", "168.63.129.16", "192.0.0.192",
    "::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1",
]  # fmt: skip


def _check_async(url: str, policy: FetchPolicy) -> object:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, functools.partial(check_url_async, url, policy)).result()


@pytest.mark.parametrize("address", METADATA)
def test_cloud_metadata_addresses_are_refused_whatever_the_policy(address: str) -> None:
    """Neither --allow-private-urls nor --allowed-input-hosts opens a metadata endpoint."""
    ip = ipaddress.ip_address(address)
    assert is_metadata_address(ip) and not is_public_address(ip)
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}/latest/meta-data/iam/security-credentials/"
    allowed = frozenset({f"{host}:80"})
    for policy in [FetchPolicy(), _local(), FetchPolicy(allowed_hosts=allowed), _local(allowed_hosts=allowed)]:
        err = _refused(check_url, url, policy, type="url_forbidden")
        assert "cloud metadata address" in err.msg
        _refused(_check_async, url, policy, type="url_forbidden")


def test_metadata_names_are_refused_by_the_address_they_resolve_to() -> None:
    dns = {
        "metadata.google.internal": ["169.254.169.254"],
        "instance-data.ec2.internal": ["fd00:ec2::254"],
        "mixed.example": ["127.0.0.1", "169.254.169.254"],
    }
    for name in dns:
        policy = _local(resolver=lambda host, port: dns[host], allowed_hosts=frozenset({f"{name}:80"}))
        err = _refused(check_url, f"http://{name}/computeMetadata/v1/", policy, type="url_forbidden")
        assert err.msg == f"URL host '{name}' resolves to a cloud metadata address, which is never fetched"


def test_private_addresses_stay_reachable_when_allowed() -> None:
    for address in ["127.0.0.1", "10.0.0.1", "172.16.0.1", "100.100.100.201", "fd00:ec3::254"]:
        assert not is_metadata_address(ipaddress.ip_address(address)), address
        host = f"[{address}]" if ":" in address else address
        check_url(f"http://{host}/a.png", _local())
        _refused(check_url, f"http://{host}/a.png", FetchPolicy(), type="url_forbidden")


def test_check_url_async_matches_check_url() -> None:
    policy = FetchPolicy(resolver=lambda h, p: ["8.8.8.8"])
    assert _check_async("https://images.example/a.png", policy) == check_url("https://images.example/a.png", policy)
    _refused(_check_async, "http://example.com/", FetchPolicy(resolver=_no_such_host), type="url_unresolvable")
    start = time.monotonic()
    slow = FetchPolicy(resolver=_hanging_resolver, connect_timeout_s=0.2)
    _refused(_check_async, "https://example.com/x.png", slow, type="url_unresolvable")
    assert time.monotonic() - start < 1.5


# -- fetch_bytes ---------------------------------------------------------------------------


def test_fetch_works(server: str) -> None:
    assert fetch_bytes(f"{server}/img/astronaut.png", _local(), loc=LOC) == ASTRONAUT
    assert fetch_bytes(f"{server}/img/rocket.jpg", _local(), loc=LOC) == ROCKET
    assert fetch_bytes(f"{server}/relative", _local(), loc=LOC) == CHELSEA


def test_connection_is_pinned_to_the_checked_address() -> None:
    """The name resolves (via the policy) to 127.0.0.2, where the server listens; the system
    would say 127.0.0.1, where nothing does. Host keeps the name."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        port = httpd.server_address[1]
        policy = _local(resolver=lambda host, p: ["127.0.0.2"])
        assert fetch_bytes(f"http://localhost:{port}/echo-host", policy, loc=LOC) == (
            f"localhost:{port}".encode()
        )
    finally:
        httpd.shutdown()
        httpd.server_close()


# A self-signed certificate for "images.test" (EC P-256, valid until 2126).
TLS_KEY_AND_CERT = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgr+jUYXtnB4Q+zS6r
7rnxGOsC0+caUe/fFlqYAVid8Q+hRANCAAQzdw1phyIBQkXa42lZZE52eW3mYmrx
ctFrrlamnn0/iNh9yvCewgFJFtnKkIFrGKHkSu06+vabLl/H1nl9UarN
-----END PRIVATE KEY-----
-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUbCxyR0QFELx3AdZMCUkCPKFCgScwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLaW1hZ2VzLnRlc3QwIBcNMjYxMTIxMDU0OTAyWhgPMjEyNjEw
MjgwNTQ5MDJaMBYxFDASBgNVBAMMC2ltYWdlcy50ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEM3cNaYciAUJF2uNpWWROdnlt5mJq8XLRa65Wpp59P4jYfcrw
nsIBSRbZypCBaxih5ErtOvr2my5fx9Z5fVGqzaNrMGkwHQYDVR0OBBYEFKzP5c0h
Bh7xrBXbkOXBmUgTAd8vMB8GA1UdIwQYMBaAFKzP5c0hBh7xrBXbkOXBmUgTAd8v
MA8GA1UdEwEB/wQFMAMBAf8wFgYDVR0RBA8wDYILaW1hZ2VzLnRlc3QwCgYIKoZI
zj0EAwIDSAAwRQIhAN3oF8S2WwD1tfvUIGON7Jol3Dl4t6nGDPH+hVF/lY9qAiB8
ygqZl8SfMwU76ClOgyyoZw/XX3p7+905P8TKjLWJ0A==
-----END CERTIFICATE-----
"""


def test_https_sends_the_name_as_sni_and_verifies(tmp_path) -> None:
    """https to a checked IP still does TLS for the name: the server sees SNI "images.test",
    and its self-signed certificate is refused (verification stays on)."""
    pem = tmp_path / "server.pem"
    pem.write_text(TLS_KEY_AND_CERT)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pem)
    sni: list[str | None] = []
    tls.sni_callback = lambda sock, name, ctx: sni.append(name)
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]

    def serve() -> None:
        conn, _ = lst.accept()
        with contextlib.suppress(OSError):  # the client rejects the certificate, hangs up
            tls.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    policy = _local(resolver=lambda host, p: ["127.0.0.1"])
    err = _refused(
        fetch_bytes, f"https://images.test:{port}/a.png", policy, loc=LOC, type="url_unreachable"
    )
    thread.join(2)
    lst.close()
    assert err.msg == "could not fetch image: TLS handshake with 'images.test' failed"
    assert sni == ["images.test"]


def test_redirect_chain_limit(server: str) -> None:
    assert fetch_bytes(f"{server}/redirect/3", _local(), loc=LOC) == ASTRONAUT
    err = _refused(fetch_bytes, f"{server}/redirect/4", _local(), loc=LOC, type="url_redirects")
    assert err.loc == LOC
    _refused(
        fetch_bytes, f"{server}/redirect/1", _local(max_redirects=0), loc=LOC, type="url_redirects"
    )


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x.png", "file:///etc/passwd"])
def test_redirect_to_forbidden_scheme(server: str, target: str) -> None:
    _refused(fetch_bytes, f"{server}/to?url={target}", _local(), loc=LOC, type="url_forbidden")


def test_redirect_hops_are_rechecked(server: str, listener: Listener) -> None:
    """The test server is exempt via allowed_hosts; the loopback port it redirects to is not."""
    allowed = frozenset({server.removeprefix("http://")})
    policy = FetchPolicy(allowed_hosts=allowed, connect_timeout_s=1.0)
    assert fetch_bytes(f"{server}/img/astronaut.png", policy, loc=LOC) == ASTRONAUT
    for target in [f"http://127.0.0.1:{listener.port}/", f"http://localhost:{listener.port}/"]:
        _refused(fetch_bytes, f"{server}/to?url={target}", policy, loc=LOC, type="url_forbidden")
    assert listener.connections() == 0


def test_oversize_body_is_refused(server: str) -> None:
    policy = _local(max_bytes=100_000)
    _refused(fetch_bytes, f"{server}/big-length", policy, loc=LOC, type="file_too_large")
    _refused(fetch_bytes, f"{server}/big-stream", policy, loc=LOC, type="file_too_large")
    _refused(fetch_bytes, f"{server}/img/astronaut.png", policy, loc=LOC, type="file_too_large")


def test_slow_servers_time_out(server: str) -> None:
    err = _refused(
        fetch_bytes, f"{server}/slow", _local(read_timeout_s=0.3), loc=LOC, type="url_unreachable"
    )
    assert err.msg == "could not fetch image: timed out after 0.3 s"
    err = _refused(
        fetch_bytes, f"{server}/drip", _local(total_timeout_s=0.4), loc=LOC, type="url_unreachable"
    )
    assert err.msg == "could not fetch image: timed out after 0.4 s"


@pytest.mark.parametrize("code", [204, 304, 404, 500])
def test_non_2xx_is_refused(server: str, code: int) -> None:
    if code == 204:  # 2xx but empty: fetched; the decoder refuses it
        assert fetch_bytes(f"{server}/status/204", _local(), loc=LOC) == b""
        return
    err = _refused(fetch_bytes, f"{server}/status/{code}", _local(), loc=LOC, type="url_status")
    assert f"HTTP {code}" in err.msg


def test_connection_refused_is_short(listener: Listener) -> None:
    port = listener.port
    listener.close()
    err = _refused(
        fetch_bytes, f"http://127.0.0.1:{port}/", _local(), loc=LOC, type="url_unreachable"
    )
    assert err.msg == "could not fetch image: could not connect to '127.0.0.1'"


# -- data URIs -----------------------------------------------------------------------------


def test_data_uri() -> None:
    uri = "data:image/png;base64," + base64.b64encode(ASTRONAUT).decode()
    assert read_data_uri(uri, FetchPolicy(), loc=LOC) == ASTRONAUT
    jpeg = "DATA:image/JPEG;base64," + base64.b64encode(ROCKET).decode()
    assert read_data_uri(jpeg, FetchPolicy(), loc=LOC) == ROCKET


@pytest.mark.parametrize(
    ("uri", "type_"),
    [
        ("data:image/png;base64,iVBORw0KGgo*", "data_uri_invalid"),
        ("data:image/png;base64,iVBO Rw0KGgo=", "data_uri_invalid"),
        ("data:image/png,rawbytes", "data_uri_invalid"),
        ("data:image/png;base64", "data_uri_invalid"),
        ("data:image/gif;base64,R0lGODlh", "image_format"),
        ("data:text/html;base64,PGgxPg==", "image_format"),
        ("data:image/png;base64," + "A" * 200_000, "file_too_large"),
    ],
)
def test_bad_data_uris(uri: str, type_: str) -> None:
    _refused(read_data_uri, uri, FetchPolicy(max_bytes=100_000), loc=LOC, type=type_)


# -- decode_image --------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_decode_real_images() -> None:
    image = decode_image(ASTRONAUT, FetchPolicy(), loc=LOC)
    assert (image.format, image.size, image.mode) == ("PNG", (512, 512), "RGB")
    image = decode_image(ROCKET, FetchPolicy(), loc=LOC)
    assert image.format == "JPEG" and image.size == (640, 427)
    assert image.getpixel((0, 0)) is not None  # loaded
    assert sniff_format(ASTRONAUT) == "png" and sniff_format(ROCKET) == "jpeg"


def test_decode_refuses_other_formats_by_content() -> None:
    gif = io.BytesIO()
    Image.open(io.BytesIO(CHELSEA)).save(gif, "GIF")  # would be served as "chelsea.png"
    real_gif = _data("no_time_for_that_tiny.gif")
    for data in [gif.getvalue(), real_gif, b"", b"hello", b"\x89PNG"]:
        err = _refused(decode_image, data, FetchPolicy(), loc=LOC, type="image_format")
        assert err.msg == "Only JPEG and PNG images are supported" and err.loc == LOC
    assert sniff_format(gif.getvalue()) is None


def test_decode_refuses_truncated_images() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    halves = [ROCKET[: len(ROCKET) // 2], ASTRONAUT[: len(ASTRONAUT) // 2]]
    for data in [*halves, ROCKET[:4], ASTRONAUT[:40]]:
        _refused(decode_image, data, FetchPolicy(), loc=LOC, type="image_corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Small PNGs that claim many pixels: 20000x20000 (Pillow itself refuses these) and
    8000x8000 (under Pillow's limit, over the policy's), plus a header-only 8000x8000 whose
    pixel data is cut off -- refusing it as too large proves the check ran before decoding."""
    big = _png(Image.new("1", (20000, 20000)))
    mid = _png(Image.new("1", (8000, 8000)))
    return {"big": big, "mid": mid, "header_only": mid[:60]}


def test_decode_refuses_decompression_bombs(bombs: dict[str, bytes]) -> None:
    max_pixels = Image.MAX_IMAGE_PIXELS
    for name, data in bombs.items():
        assert len(data) < 100_000, name
        _refused(decode_image, data, FetchPolicy(), loc=LOC, type="image_too_large")
    _refused(
        decode_image,
        ASTRONAUT,
        FetchPolicy(max_pixels=512 * 512 - 1),
        loc=LOC,
        type="image_too_large",
    )
    assert decode_image(ASTRONAUT, FetchPolicy(max_pixels=512 * 512), loc=LOC).size == (512, 512)
    assert max_pixels == Image.MAX_IMAGE_PIXELS


def test_decode_size_cap() -> None:
    _refused(decode_image, ASTRONAUT, FetchPolicy(max_bytes=1000), loc=LOC, type="file_too_large")


def test_open_image_reads_the_header_only(bombs: dict[str, bytes]) -> None:
    """The 8000x8000 PNG cut off after its header opens (its size known) and fails only when
    loaded: opening decodes nothing."""
    policy = FetchPolicy(max_pixels=10**8)
    image = open_image(bombs["header_only"], policy, loc=LOC)
    assert (image.format, image.size) == ("PNG", (8000, 8000))
    _refused(load_image, image, policy, loc=LOC, type="image_corrupt")
    _refused(open_image, bombs["mid"], FetchPolicy(), loc=LOC, type="image_too_large")
    assert load_image(open_image(ASTRONAUT, policy, loc=LOC), policy, loc=LOC).getpixel((0, 0)) is not None

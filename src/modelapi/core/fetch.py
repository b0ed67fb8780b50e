"""Fetching and decoding input images (the schema's image fields: URLs, data URIs, uploads) without becoming an SSRF proxy.

Entry points:

- :func:`check_url` -- parse an ``http(s)`` URL, resolve its host and refuse it unless every
  address is public (:func:`is_public_address`).
- :func:`fetch_bytes` -- GET a checked URL with the connection pinned to the checked address,
  redirects followed by hand (each hop re-checked), timeouts and a size cap.
- :func:`read_data_uri` -- decode a ``data:image/png|jpeg;base64,`` URI under the same size cap.
- :func:`decode_image` -- decode real JPEG/PNG (by content) under a pixel limit.

Every refusal is an :class:`~modelapi.errors.InputError` carrying the caller's ``loc`` and one
of these ``type`` values: ``url_invalid``, ``url_forbidden``, ``url_unresolvable``,
``url_unreachable`` (connection error / timeout), ``url_status`` (non-2xx),
``url_redirects`` (too many hops), ``data_uri_invalid``, ``file_too_large``,
``image_format``, ``image_too_large``, ``image_corrupt``.

Design notes:

- URLs with userinfo (``http://user@host/``) are refused outright: image URLs never need
  credentials, and ``http://example.com@127.0.0.1/`` is a classic way to hide the real host.
- Host names are resolved with :func:`socket.getaddrinfo`, i.e. by the same code the socket
  layer would use, so legacy spellings (``2130706433``, ``0x7f000001``, ``127.1``) are judged
  by the address they really reach. The request then connects to that checked IP (sending the
  original ``Host`` header and, for https, the original name as TLS SNI / verification
  hostname), so a second DNS answer cannot swap it (DNS rebinding). Connections are never
  reused across hops.
- ``FetchPolicy.allowed_hosts`` exempts exact ``"host:port"`` strings from the address check
  (an ops allowlist, e.g. an internal asset server; the tests use it too).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import certifi
import httpx
from PIL import Image

from modelapi.errors import InputError
from modelapi.validation import sniff_format

__all__ = [
    "FetchPolicy",
    "check_url",
    "decode_image",
    "fetch_bytes",
    "is_public_address",
    "read_data_uri",
    "sniff_format",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, via :func:`socket.getaddrinfo` (raises ``OSError``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]  # an IP address string for AF_INET/AF_INET6


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for fetching and decoding one input image.

    Attributes:
        allow_private (`bool`, default False): skip the address check entirely
            (``--allow-private-urls``; for tests and trusted networks only).
        allowed_hosts (`frozenset[str]`): exact ``"host:port"`` strings exempt from the
            address check (IPv6 as ``"[::1]:8080"``; the port is always written out).
        connect_timeout_s (`float`, s): TCP/TLS connect timeout; also bounds DNS resolution.
        read_timeout_s (`float`, s): longest wait for any single read (or write).
        total_timeout_s (`float`, s): deadline for the whole fetch, redirects included.
        max_bytes (`int`, bytes): largest accepted body / decoded data URI.
        max_redirects (`int`): most redirect hops followed.
        max_pixels (`int`, px): largest accepted ``width * height``.
        resolver (``(host, port) -> list[str]``): turns a host into IP address strings,
            raising ``OSError`` if it cannot; :func:`system_resolver` unless injected (tests).
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    max_bytes: int = 50 * 1024 * 1024
    max_redirects: int = 3
    max_pixels: int = 40_000_000
    resolver: Callable[[str, int], Sequence[str]] = system_resolver

    @classmethod
    def from_settings(cls, settings: Any) -> FetchPolicy:
        """The policy of a server's :class:`~modelapi.core.config.Settings` (``--allow-private-urls``,
        ``--allowed-input-hosts``, ``--fetch-timeout-s``, ``--max-input-bytes``, ``--max-input-pixels``)."""
        return cls(allow_private=settings.allow_private_urls, allowed_hosts=frozenset(settings.allowed_input_hosts),
                   total_timeout_s=settings.fetch_timeout_s, max_bytes=settings.max_input_bytes,
                   max_pixels=settings.max_input_pixels)


def _nets(*cidrs: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Belt and braces on top of ``ip.is_global``, whose coverage differs across Python releases.
_BLOCKED_V4 = _nets(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
_BLOCKED_V6 = _nets(
    "::/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8",
)  # fmt: skip
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (pure; makes no connection).

    IPv6 forms that embed an IPv4 address -- IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32`` -- are public only if the
    embedded IPv4 address is (Teredo client and server both; Teredo is refused anyway).
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        embedded = [ip.sixtofour] if ip.sixtofour else list(ip.teredo or ())
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if not all(is_public_address(v4) for v4 in embedded):
            return False
        blocked = _BLOCKED_V6
    else:
        blocked = _BLOCKED_V4
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in blocked)


def _resolve(policy: FetchPolicy, host: str, port: int) -> list[IPAddress]:
    """``policy.resolver(host, port)`` as addresses, giving up after ``connect_timeout_s``."""
    out: dict[str, Any] = {}

    def work() -> None:
        with contextlib.suppress(OSError, UnicodeError, ValueError):  # all mean "unresolvable"
            found = policy.resolver(host, port)
            out["addrs"] = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]

    worker = threading.Thread(target=work, name="modelapi-resolve", daemon=True)
    worker.start()
    worker.join(policy.connect_timeout_s)
    if not out.get("addrs"):
        raise LookupError
    return list(dict.fromkeys(out["addrs"]))


def check_url(
    url: str, policy: FetchPolicy, *, loc: list | None = None
) -> tuple[httpx.URL, list[IPAddress]]:
    """Parse ``url``, check its scheme, resolve its host and check every address.

    Returns the parsed URL and its addresses (all public, unless ``policy.allow_private`` or
    the host is in ``policy.allowed_hosts``). Makes no connection.

    Raises:
        InputError: ``url_invalid`` (unparseable, relative, no host), ``url_forbidden`` (scheme
            other than http/https, userinfo, non-public address), ``url_unresolvable``.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise InputError("not a valid URL", loc, "url_invalid") from None
    scheme = parsed.scheme
    if not scheme:
        raise InputError("not an absolute URL (expected http:// or https://)", loc, "url_invalid")
    if scheme not in ("http", "https"):
        msg = f"URL scheme '{scheme}' is not allowed; only http and https URLs are fetched"
        raise InputError(msg, loc, "url_forbidden")
    if parsed.userinfo:
        raise InputError("URLs with credentials (user@host) are not allowed", loc, "url_forbidden")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise InputError("URL has no host", loc, "url_invalid")
    port = parsed.port or (443 if scheme == "https" else 80)
    try:
        addrs = _resolve(policy, host, port)
    except LookupError:
        msg = f"could not resolve host '{parsed.host}'"
        raise InputError(msg, loc, "url_unresolvable") from None
    exempt = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    exempt_ok = policy.allow_private or exempt in policy.allowed_hosts
    if not exempt_ok and not all(is_public_address(a) for a in addrs):
        msg = f"URL host '{parsed.host}' resolves to a private or reserved address"
        raise InputError(msg, loc, "url_forbidden")
    return parsed, addrs


_REDIRECTS = {301, 302, 303, 307, 308}


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context (certifi's CAs, as httpx's default), built once: ~20 ms."""
    return ssl.create_default_context(cafile=certifi.where())


def fetch_bytes(url: str, policy: FetchPolicy, *, loc: list) -> bytes:
    """GET ``url`` and return its body (`bytes`, ``len <= policy.max_bytes``).

    Each hop is checked by :func:`check_url` and connects only to an address it checked.
    ``total_timeout_s`` is checked between hops and while the body streams in.

    Raises:
        InputError: any :func:`check_url` type, ``url_redirects``, ``url_status``,
            ``url_unreachable``, ``file_too_large``.
    """
    deadline = time.monotonic() + policy.total_timeout_s
    limits = httpx.Limits(max_keepalive_connections=0)  # never reuse a connection across hops
    client = httpx.Client(trust_env=False, follow_redirects=False, limits=limits, verify=_tls())
    with client:
        for _ in range(policy.max_redirects + 1):
            target, addrs = check_url(url, policy, loc=loc)
            result = _get_pinned(client, target, addrs, policy, deadline, loc)
            if isinstance(result, bytes):
                return result
            url = str(result)  # a redirect: checked from scratch on the next hop
    msg = f"too many redirects (more than {policy.max_redirects})"
    raise InputError(msg, loc, "url_redirects")


def _timed_out(seconds: float, loc: list) -> InputError:
    msg = f"could not fetch image: timed out after {seconds:.3g} s"
    return InputError(msg, loc, "url_unreachable")


def _too_large(policy: FetchPolicy, loc: list) -> InputError:
    return InputError(f"image is larger than {policy.max_bytes} bytes", loc, "file_too_large")


def _caused_by(exc: BaseException | None, kind: type[BaseException]) -> bool:
    while exc is not None and not isinstance(exc, kind):
        exc = exc.__cause__ or exc.__context__
    return exc is not None


def pinned(target: httpx.URL, addr: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """What connects to ``target`` at the checked address ``addr`` only: the URL with the IP in
    it, the ``Host`` header, and the TLS SNI extension (the name stays in Host, SNI and
    certificate verification). For every request made behind :func:`check_url`."""
    ext = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
    return target.copy_with(host=str(addr)), {"Host": target.netloc.decode("ascii")}, ext


def _get_pinned(
    client: httpx.Client,
    target: httpx.URL,
    addrs: list[IPAddress],
    policy: FetchPolicy,
    deadline: float,
    loc: list,
) -> bytes | httpx.URL:
    """One hop: the body, or the next URL on a redirect. Tries each checked address in turn."""
    headers = {
        "Accept": "image/png, image/jpeg, */*;q=0.5",
        "Accept-Encoding": "identity",  # no transfer compression: the cap counts real bytes
    }
    for addr in addrs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(policy.total_timeout_s, loc)
        connect_s = min(policy.connect_timeout_s, remaining)
        read_s = min(policy.read_timeout_s, remaining)
        timeout = httpx.Timeout(connect=connect_s, read=read_s, write=read_s, pool=connect_s)
        url, host, ext = pinned(target, addr)
        try:
            with client.stream(
                "GET", url, headers={**headers, **host}, extensions=ext, timeout=timeout
            ) as resp:
                return _read_response(resp, target, policy, deadline, loc)
        except httpx.ConnectError as exc:
            if _caused_by(exc, ssl.SSLError):
                msg = f"could not fetch image: TLS handshake with '{target.host}' failed"
                raise InputError(msg, loc, "url_unreachable") from None
            continue  # refused / unreachable: try the host's next address
        except (httpx.ConnectTimeout, httpx.PoolTimeout):
            raise _timed_out(connect_s, loc) from None
        except httpx.TimeoutException:
            raise _timed_out(read_s, loc) from None
        except httpx.HTTPError as exc:
            malformed = isinstance(exc, httpx.ProtocolError)
            reason = "the server's response was malformed" if malformed else "connection error"
            raise InputError(f"could not fetch image: {reason}", loc, "url_unreachable") from None
    msg = f"could not fetch image: could not connect to '{target.host}'"
    raise InputError(msg, loc, "url_unreachable")


def _read_response(
    resp: httpx.Response, target: httpx.URL, policy: FetchPolicy, deadline: float, loc: list
) -> bytes | httpx.URL:
    if resp.status_code in _REDIRECTS and "location" in resp.headers:
        try:
            return target.join(resp.headers["location"])
        except (httpx.InvalidURL, ValueError):
            raise InputError("redirect to an invalid URL", loc, "url_invalid") from None
    if not 200 <= resp.status_code < 300:
        msg = f"could not fetch image: HTTP {resp.status_code} {resp.reason_phrase}".rstrip()
        raise InputError(msg, loc, "url_status")
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > policy.max_bytes:
        raise _too_large(policy, loc)
    body = bytearray()
    for chunk in resp.iter_bytes():
        body += chunk
        if len(body) > policy.max_bytes:
            raise _too_large(policy, loc)
        if time.monotonic() > deadline:
            raise _timed_out(policy.total_timeout_s, loc)
    return bytes(body)


def read_data_uri(uri: str, policy: FetchPolicy, *, loc: list) -> bytes:
    """Decode ``data:image/png;base64,...`` or ``data:image/jpeg;base64,...`` to bytes.

    The base64 payload must be strict (no whitespace). The size cap applies to the decoded
    bytes and is checked before decoding. The declared type is not trusted: callers pass
    the bytes to :func:`decode_image`, which checks the content.

    Raises:
        InputError: ``data_uri_invalid`` (malformed, not base64), ``image_format`` (media
            type other than PNG/JPEG), ``file_too_large``.
    """
    head, sep, payload = uri.partition(",")
    if not sep or not head[:5].lower() == "data:":
        raise InputError("not a data: URI", loc, "data_uri_invalid")
    media_type, *params = head[5:].lower().split(";")
    if params[-1:] != ["base64"]:
        raise InputError("data: URI must be base64-encoded (';base64,')", loc, "data_uri_invalid")
    if media_type not in ("image/png", "image/jpeg", "image/jpg"):
        raise InputError("Only JPEG and PNG images are supported", loc, "image_format")
    if len(payload) // 4 * 3 > policy.max_bytes + 2:
        raise _too_large(policy, loc)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("data: URI payload is not valid base64", loc, "data_uri_invalid") from None
    if len(data) > policy.max_bytes:
        raise _too_large(policy, loc)
    return data


def decode_image(data: bytes, policy: FetchPolicy, *, loc: list) -> Image.Image:
    """Decode JPEG/PNG ``data`` into a fully loaded PIL image (mode as stored, not converted).

    The pixel count is read from the header and checked against ``policy.max_pixels``
    before any pixel is decoded. Pillow's global settings are left alone
    (``MAX_IMAGE_PIXELS`` stays set, ``LOAD_TRUNCATED_IMAGES`` stays False).

    Raises:
        InputError: ``file_too_large``, ``image_format`` (not PNG/JPEG by content),
            ``image_too_large`` (over ``max_pixels``, or a Pillow decompression bomb),
            ``image_corrupt`` (truncated or undecodable).
    """
    if len(data) > policy.max_bytes:
        raise _too_large(policy, loc)
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError("Only JPEG and PNG images are supported", loc, "image_format")
    too_large = f"image has more than {policy.max_pixels} pixels"
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt.upper()])  # lazy: header only
        width, height = image.size
        if width * height > policy.max_pixels:
            raise InputError(f"{too_large} ({width}x{height})", loc, "image_too_large")
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # warning: if -W error
        raise InputError(too_large, loc, "image_too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError):
        # Pillow's refusals of truncated / malformed files (UnidentifiedImageError is OSError).
        msg = f"image is corrupt or truncated ({fmt.upper()})"
        raise InputError(msg, loc, "image_corrupt") from None
    return image

"""Fetching and decoding input images (the schema's image fields: URLs, data URIs, uploads) without becoming an SSRF proxy.

Entry points:

- :func:`check_url` -- parse an ``http(s)`` URL, resolve its host and refuse it unless every
  address is public (:func:`is_public_address`).
  :func:`check_url_async` is the same check for the event loop (the lookup runs in a thread).
- :func:`fetch` -- (async) GET a checked URL with the connection pinned to the checked address,
  redirects followed by hand (each hop re-checked), a size cap, and one total deadline over the
  whole fetch: lookups, connects, response headers, redirects and body.
- :func:`read_data_uri` -- decode a ``data:image/png|jpeg;base64,`` URI under the same size cap.
- :func:`open_image` -- read a real JPEG/PNG's header only (format by content, size, pixel
  limit), so that size rules are applied before any pixel is decoded; :func:`load_image` then
  decodes it; :func:`decode_image` does both.

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
- Cloud instance-metadata and credential endpoints (:func:`is_metadata_address`: all of
  link-local ``169.254.0.0/16``, AWS's ``fd00:ec2::/64``, Alibaba's ``100.100.100.200``,
  Azure's WireServer ``168.63.129.16``, Oracle's ``192.0.0.192``, and IPv6 forms embedding
  them) are refused always: neither ``allow_private`` nor ``allowed_hosts`` opens them. Names
  such as ``metadata.google.internal`` are refused by the address they resolve to.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import functools
import io
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import certifi
import httpx
from PIL import Image

from modelapi.errors import InputError
from modelapi.validation import sniff_format

__all__ = [
    "FetchPolicy",
    "check_url",
    "check_url_async",
    "decode_image",
    "fetch",
    "is_metadata_address",
    "is_public_address",
    "load_image",
    "open_image",
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
        allow_private (`bool`, default False): skip the address check, all but its refusal of
            cloud metadata addresses (``--allow-private-urls``; for tests and trusted networks only).
        allowed_hosts (`frozenset[str]`): exact ``"host:port"`` strings exempt from the address
            check, all but its refusal of cloud metadata addresses (IPv6 as ``"[::1]:8080"``;
            the port is always written out).
        connect_timeout_s (`float`, s): TCP/TLS connect timeout; also bounds DNS resolution.
        read_timeout_s (`float`, s): longest wait for any single read (or write).
        total_timeout_s (`float`, s): deadline for the whole fetch: every lookup, connect,
            response header byte, redirect and body byte (``--fetch-timeout-s``).
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
_V4_COMPATIBLE = ipaddress.ip_network("::/96")

# Instance-metadata and credential endpoints, refused even under ``allow_private`` /
# ``allowed_hosts``: link-local holds every cloud's 169.254.169.254 (AWS, GCP, Azure, OpenStack,
# DigitalOcean, Oracle, Hetzner, ...), ECS's 169.254.170.2 and EKS's 169.254.170.23; AWS's IPv6
# endpoints are in fd00:ec2::/64; Alibaba 100.100.100.200; Azure's WireServer 168.63.129.16
# (a public address); Oracle Cloud Classic 192.0.0.192.
_METADATA = _nets(
    "169.254.0.0/16", "100.100.100.200/32", "168.63.129.16/32", "192.0.0.192/32", "fd00:ec2::/64",
)  # fmt: skip


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped, IPv4-compatible, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo (client and server)."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    embedded = [ip.sixtofour] if ip.sixtofour else list(ip.teredo or ())
    if ip in _NAT64 or ip in _V4_COMPATIBLE:
        embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return embedded


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses (pure; makes no connection).

    IPv6 forms that embed an IPv4 address -- IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32`` -- are public only if the
    embedded IPv4 address is (Teredo client and server both; Teredo is refused anyway).
    Cloud metadata addresses (:func:`is_metadata_address`) are never public.
    """
    if is_metadata_address(ip):
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if not all(is_public_address(v4) for v4 in _embedded_v4(ip)):
            return False
        blocked = _BLOCKED_V6
    else:
        blocked = _BLOCKED_V4
    return ip.is_global and not ip.is_multicast and not any(ip in net for net in blocked)


def is_metadata_address(ip: IPAddress) -> bool:
    """True for cloud instance-metadata and credential endpoints (pure; makes no connection):
    ``169.254.0.0/16`` (link-local: 169.254.169.254, ECS 169.254.170.2, EKS 169.254.170.23),
    ``fd00:ec2::/64`` (AWS IPv6: fd00:ec2::254, ...), ``100.100.100.200`` (Alibaba),
    ``168.63.129.16`` (Azure WireServer), ``192.0.0.192`` (Oracle), and IPv6 addresses that
    embed one of them. :func:`check_url` refuses these whatever the policy says."""
    if isinstance(ip, ipaddress.IPv6Address) and any(is_metadata_address(v4) for v4 in _embedded_v4(ip)):
        return True
    return any(ip in net for net in _METADATA)


def _lookup(policy: FetchPolicy, host: str, port: int) -> concurrent.futures.Future[list[IPAddress]]:
    """Start ``policy.resolver(host, port)`` in a thread of its own (never a shared pool's: a
    resolver may hang until the system's own timeout, and the caller stops waiting sooner).
    The future's result is the distinct addresses, or ``LookupError`` if there are none."""
    future: concurrent.futures.Future[list[IPAddress]] = concurrent.futures.Future()

    def work() -> None:
        if not future.set_running_or_notify_cancel():  # a waiter gave up before the thread ran
            return
        addrs: list[IPAddress] = []
        try:
            found = policy.resolver(host, port)
            addrs = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        except (OSError, UnicodeError, ValueError):  # all mean "unresolvable"
            pass
        if addrs:
            future.set_result(list(dict.fromkeys(addrs)))
        else:
            future.set_exception(LookupError(host))

    threading.Thread(target=work, name="modelapi-resolve", daemon=True).start()
    return future


def _resolve(policy: FetchPolicy, host: str, port: int) -> list[IPAddress]:
    """``policy.resolver(host, port)`` as addresses, giving up after ``connect_timeout_s``
    (raises ``LookupError``)."""
    try:
        return _lookup(policy, host, port).result(timeout=policy.connect_timeout_s)
    except concurrent.futures.TimeoutError:
        raise LookupError(host) from None


async def _resolve_async(policy: FetchPolicy, host: str, port: int) -> list[IPAddress]:
    """:func:`_resolve` for the event loop: awaits the lookup's thread, blocks nothing."""
    with anyio.move_on_after(policy.connect_timeout_s):
        return await asyncio.wrap_future(_lookup(policy, host, port))
    raise LookupError(host)


def _parse(url: str, loc: list | None) -> tuple[httpx.URL, str, int]:
    """The parsed URL, its host as written (IPv6 without brackets) and its port."""
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
    return parsed, host, parsed.port or (443 if scheme == "https" else 80)


def _judge(
    parsed: httpx.URL, host: str, port: int, addrs: list[IPAddress], policy: FetchPolicy, loc: list | None
) -> None:
    """Refuse ``addrs`` unless every one may be reached under ``policy``."""
    if any(is_metadata_address(a) for a in addrs):
        msg = f"URL host '{parsed.host}' resolves to a cloud metadata address, which is never fetched"
        raise InputError(msg, loc, "url_forbidden")
    exempt = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    exempt_ok = policy.allow_private or exempt in policy.allowed_hosts
    if not exempt_ok and not all(is_public_address(a) for a in addrs):
        msg = f"URL host '{parsed.host}' resolves to a private or reserved address"
        raise InputError(msg, loc, "url_forbidden")


def _unresolvable(parsed: httpx.URL, loc: list | None) -> InputError:
    return InputError(f"could not resolve host '{parsed.host}'", loc, "url_unresolvable")


def check_url(
    url: str, policy: FetchPolicy, *, loc: list | None = None
) -> tuple[httpx.URL, list[IPAddress]]:
    """Parse ``url``, check its scheme, resolve its host and check every address.

    Returns the parsed URL and its addresses (all public, unless ``policy.allow_private`` or
    the host is in ``policy.allowed_hosts``; never a cloud metadata address, whatever the
    policy). Makes no connection. Blocks for the lookup (at most ``connect_timeout_s``).

    Raises:
        InputError: ``url_invalid`` (unparseable, relative, no host), ``url_forbidden`` (scheme
            other than http/https, userinfo, non-public or metadata address), ``url_unresolvable``.
    """
    parsed, host, port = _parse(url, loc)
    try:
        addrs = _resolve(policy, host, port)
    except LookupError:
        raise _unresolvable(parsed, loc) from None
    _judge(parsed, host, port, addrs, policy, loc)
    return parsed, addrs


async def check_url_async(
    url: str, policy: FetchPolicy, *, loc: list | None = None
) -> tuple[httpx.URL, list[IPAddress]]:
    """:func:`check_url` on the event loop: the same checks and errors; the lookup runs in a
    thread of its own and is awaited, so the loop never blocks."""
    parsed, host, port = _parse(url, loc)
    try:
        addrs = await _resolve_async(policy, host, port)
    except LookupError:
        raise _unresolvable(parsed, loc) from None
    _judge(parsed, host, port, addrs, policy, loc)
    return parsed, addrs


_REDIRECTS = {301, 302, 303, 307, 308}


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context (certifi's CAs, as httpx's default), built once: ~20 ms."""
    return ssl.create_default_context(cafile=certifi.where())


async def fetch(url: str, policy: FetchPolicy, *, loc: list) -> bytes:
    """GET ``url`` and return its body (`bytes`, ``len <= policy.max_bytes``), without blocking
    the event loop.

    Each hop is checked by :func:`check_url_async` and connects only to an address it checked.
    ``policy.total_timeout_s`` bounds the whole call -- lookups, connects, the response headers
    (however slowly they trickle in), redirects and the body -- as one deadline; the connect
    and read timeouts bound each step within it.

    Raises:
        InputError: any :func:`check_url` type, ``url_redirects``, ``url_status``,
            ``url_unreachable`` (refused, TLS failure, malformed answer, any timeout),
            ``file_too_large``.
    """
    try:
        with anyio.fail_after(policy.total_timeout_s):
            return await _fetch(url, policy, loc)
    except TimeoutError:
        raise _timed_out(policy.total_timeout_s, loc) from None


async def _fetch(url: str, policy: FetchPolicy, loc: list) -> bytes:
    limits = httpx.Limits(max_keepalive_connections=0)  # never reuse a connection across hops
    client = httpx.AsyncClient(trust_env=False, follow_redirects=False, limits=limits, verify=_tls())
    async with client:
        for _ in range(policy.max_redirects + 1):
            target, addrs = await check_url_async(url, policy, loc=loc)
            result = await _get_pinned(client, target, addrs, policy, loc)
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


async def _get_pinned(
    client: httpx.AsyncClient, target: httpx.URL, addrs: list[IPAddress], policy: FetchPolicy, loc: list
) -> bytes | httpx.URL:
    """One hop: the body, or the next URL on a redirect. Tries each checked address in turn."""
    headers = {
        "Accept": "image/png, image/jpeg, */*;q=0.5",
        "Accept-Encoding": "identity",  # no transfer compression: the cap counts real bytes
    }
    connect_s, read_s = policy.connect_timeout_s, policy.read_timeout_s
    timeout = httpx.Timeout(connect=connect_s, read=read_s, write=read_s, pool=connect_s)
    for addr in addrs:
        url, host, ext = pinned(target, addr)
        try:
            async with client.stream(
                "GET", url, headers={**headers, **host}, extensions=ext, timeout=timeout
            ) as resp:
                return await _read_response(resp, target, policy, loc)
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


async def _read_response(
    resp: httpx.Response, target: httpx.URL, policy: FetchPolicy, loc: list
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
    async for chunk in resp.aiter_bytes():
        body += chunk
        if len(body) > policy.max_bytes:
            raise _too_large(policy, loc)
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


def open_image(data: bytes, policy: FetchPolicy, *, loc: list) -> Image.Image:
    """Open JPEG/PNG ``data`` lazily: its header only (``.size``, ``.format``), no pixel decoded.

    Callers check the size against the schema's rules (``validation.check_image``) on this
    and only then call :func:`load_image`, so a refused image costs no decoding. Pillow's global
    settings are left alone (``MAX_IMAGE_PIXELS`` stays set, ``LOAD_TRUNCATED_IMAGES`` False).

    Raises:
        InputError: ``file_too_large``, ``image_format`` (not PNG/JPEG by content),
            ``image_too_large`` (over ``policy.max_pixels``, or a Pillow decompression bomb),
            ``image_corrupt`` (a header Pillow cannot read).
    """
    if len(data) > policy.max_bytes:
        raise _too_large(policy, loc)
    fmt = sniff_format(data)
    if fmt is None:
        raise InputError("Only JPEG and PNG images are supported", loc, "image_format")
    with _pillow_errors(policy, fmt, loc):
        image = Image.open(io.BytesIO(data), formats=[fmt.upper()])  # lazy: header only
    width, height = image.size
    if width * height > policy.max_pixels:
        msg = f"image has more than {policy.max_pixels} pixels ({width}x{height})"
        raise InputError(msg, loc, "image_too_large")
    return image


def load_image(image: Image.Image, policy: FetchPolicy, *, loc: list) -> Image.Image:
    """Decode the pixels of an :func:`open_image` image; returns it, fully loaded (mode as
    stored, not converted).

    Raises:
        InputError: ``image_too_large`` (a Pillow decompression bomb), ``image_corrupt``
            (truncated or undecodable).
    """
    with _pillow_errors(policy, (image.format or "image").lower(), loc):
        image.load()
    return image


def decode_image(data: bytes, policy: FetchPolicy, *, loc: list) -> Image.Image:
    """:func:`open_image` then :func:`load_image`: a fully loaded image, with the errors of both."""
    return load_image(open_image(data, policy, loc=loc), policy, loc=loc)


@contextlib.contextmanager
def _pillow_errors(policy: FetchPolicy, fmt: str, loc: list) -> Iterator[None]:
    """Pillow's refusals as InputErrors."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # warning: if -W error
        raise InputError(f"image has more than {policy.max_pixels} pixels", loc, "image_too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError):
        # Pillow's refusals of truncated / malformed files (UnidentifiedImageError is OSError).
        msg = f"image is corrupt or truncated ({fmt.upper()})"
        raise InputError(msg, loc, "image_corrupt") from None

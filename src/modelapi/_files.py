"""Local files for the SDK, without network IO: image inputs given as local paths (checked,
then sent as uploads or inline ``data:`` URIs), and the names and places of downloaded
outputs. :mod:`modelapi.client` sends the calls built here."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from modelapi import errors
from modelapi._calls import Call
from modelapi._models import image_urls
from modelapi.validation import image_fields, sniff_format

DEFAULT_MAX_UPLOAD_BYTES = 15 * 1024 * 1024
"""Largest local file :meth:`Client.resolve_files` sends (15 MB, counted as the server's
``file_size_mb`` rule counts it: 1 MB = 1,048,576 bytes)."""

FileMode = Literal["upload", "data_uri", "auto"]

_HOSTED_DOMAIN = "runcomfy.net"
_NO_SCHEMA_IMAGE_FIELDS = ("images", "image_urls")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/webp": ".webp"}


# --------------------------------------------------------------------------- downloads


def output_urls(result: Mapping[str, Any]) -> list[str]:
    output = result.get("output")
    if not isinstance(output, dict):
        raise ValueError(f"result of request {result.get('request_id')} has no output "
                         f"(status {result.get('status')!r})")
    return image_urls(output)


def download_name(request_id: str, index: int, content_type: str | None, url: str) -> str:
    """``<request_id>_<index><ext>``: ext from the Content-Type, else the URL's suffix, else
    ``.bin``; characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    ext = _EXTENSIONS.get(media_type)
    if ext is None:
        ext = Path(httpx.URL(url).path).suffix.lower() or ".bin"
        ext = ".jpg" if ext == ".jpeg" else ext
    return _UNSAFE_NAME.sub("_", f"{request_id}_{index}{ext}")


def write(directory: Path, name: str, content: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content)
    return path


# --------------------------------------------------------------------------- local files


def _sniff_image(head: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` by magic bytes (the server's own check), else None."""
    fmt = sniff_format(head)
    return f"image/{fmt}" if fmt else None


def _image_fields(schema: dict[str, Any] | None) -> list[str]:
    """Names of the fields holding images: those whose items (or themselves) have format
    ``image_uri``; without a schema, ``images`` and ``image_urls``."""
    if schema is None:
        return list(_NO_SCHEMA_IMAGE_FIELDS)
    return list(image_fields(schema.get("input_schema", schema)))


_URL_PREFIX = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:)")


@dataclass(frozen=True)
class LocalImage:
    loc: list[Any]
    path: Path
    content: bytes
    content_type: str

    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.content).decode('ascii')}"


def local_images(input: dict[str, Any], schema: dict[str, Any] | None, max_bytes: int) -> list[LocalImage]:
    """Every local path in an image field, read and checked. Raises InputError (naming the file
    and the rule) for a missing path, a file over ``max_bytes``, or one that is not JPEG/PNG."""
    found = []
    for name in _image_fields(schema):
        value = input.get(name)
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if not isinstance(item, str) or _URL_PREFIX.match(item):
                continue  # URLs and data: URIs go as they are; the server checks them
            loc = ["body", name] + ([] if index is None else [index])
            path = Path(item).expanduser()
            if not path.is_file():
                raise errors.InputError(f"{item}: no such file (and not an http(s):// or data: URL)",
                                        loc, "file_not_found")
            size = path.stat().st_size
            if size > max_bytes:
                raise errors.InputError(
                    f"{item}: {size} bytes is over the {max_bytes}-byte limit for an input image "
                    f"({max_bytes / 1048576:g} MB)", loc, "file_too_large")
            content = path.read_bytes()
            content_type = _sniff_image(content[:8])
            if content_type is None:
                raise errors.InputError(f"{item}: only JPEG and PNG images are accepted (checked by content)",
                                        loc, "unsupported_image_type")
            found.append(LocalImage(loc, path, content, content_type))
    return found


def effective_mode(mode: FileMode, base_url: str) -> Literal["upload", "data_uri"]:
    if mode == "auto":
        host = httpx.URL(base_url).host.lower()
        hosted = host == _HOSTED_DOMAIN or host.endswith("." + _HOSTED_DOMAIN)
        return "data_uri" if hosted else "upload"
    if mode not in ("upload", "data_uri"):
        raise ValueError(f"mode must be 'upload', 'data_uri' or 'auto', not {mode!r}")
    return mode


def with_replacements(input: dict[str, Any], replacements: list[tuple[list[Any], str]]) -> dict[str, Any]:
    out = dict(input)
    for loc, url in replacements:
        name = loc[1]
        if len(loc) == 2:
            out[name] = url
        else:
            if out[name] is input[name]:
                out[name] = list(input[name])
            out[name][loc[2]] = url
    return out


def upload_call(name: str, content: bytes, content_type: str) -> Call:
    return Call("POST", "/v1/files", files={"file": (name, content, content_type)}, retry="never")


def upload_call_for(path: str | os.PathLike[str]) -> Call:
    file = Path(path).expanduser()
    content = file.read_bytes()
    return upload_call(file.name, content, _sniff_image(content[:8]) or "application/octet-stream")

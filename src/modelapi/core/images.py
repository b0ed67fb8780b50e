"""Encoding output images: the formats of ``--output-format`` and the text (prompt, seed, model,
backend, ...) carried inside every file. Shared by every backend (the local engine's worker and
the upstreams), so it depends on nothing but Pillow."""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

FORMATS = {"jpeg": ("image/jpeg", "jpg"), "png": ("image/png", "png"), "webp": ("image/webp", "webp")}
"""``--output-format`` -> (content type, file extension)."""
QUALITY = 95
_DESCRIPTION = 0x010E  # EXIF ImageDescription


def encode(image: Image.Image, fmt: str, text: dict[str, str]) -> bytes:
    """``image`` as ``fmt`` (jpeg or webp at quality 95, png lossless) with ``text`` (prompt,
    seed, model, ...) inside the file: as JSON in the EXIF ImageDescription for every format,
    and for PNG also as one iTXt chunk per key."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {sorted(FORMATS)}")
    exif = Image.Exif()
    exif[_DESCRIPTION] = json.dumps(text, ensure_ascii=True)
    buf = io.BytesIO()
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        for k, v in text.items():
            info.add_itxt(k, v)
        image.save(buf, format="PNG", pnginfo=info, exif=exif)
    else:
        image.save(buf, format=fmt.upper(), quality=QUALITY, exif=exif)
    return buf.getvalue()


def embedded_text(data: bytes) -> dict[str, str]:
    """The ``text`` that :func:`encode` put in an image file."""
    return json.loads(Image.open(io.BytesIO(data)).getexif()[_DESCRIPTION])

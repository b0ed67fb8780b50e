"""The submit headers of our extensions, in Replicate's syntax: ``Cancel-After`` (a deadline) and
``Prefer: wait`` (a synchronous wait). Parsing only: each function returns the value, or raises
:class:`~modelapi.errors.ValidationError` (422) whose ``detail`` names the header and the rule."""

from __future__ import annotations

import re

from ..errors import ValidationError

CANCEL_AFTER_MIN_S = 1.0
"""The shortest ``Cancel-After``, seconds."""
CANCEL_AFTER_MAX_S = 86_400.0
"""The longest ``Cancel-After`` (24 h), seconds."""
PREFER_WAIT_MAX_S = 60
"""The longest ``Prefer: wait=N``, seconds; a bare ``Prefer: wait`` waits this long."""

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|m|s))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def _invalid(header: str, msg: str) -> ValidationError:
    return ValidationError(f"Invalid {header} header", [{"loc": ["header", header], "msg": msg, "type": "value_error"}])


def cancel_after_s(value: str | None) -> float | None:
    """The ``Cancel-After`` header as seconds (None when absent): a number of seconds (``90``,
    ``2.5``) or a duration of ``h``, ``m``, ``s`` and ``ms`` parts (``30s``, ``5m``, ``1h30m``),
    from :data:`CANCEL_AFTER_MIN_S` (1 s) to :data:`CANCEL_AFTER_MAX_S` (24 h).

    Raises:
        ValidationError: 422 naming ``["header", "Cancel-After"]``: malformed or out of range.
    """
    if value is None:
        return None
    text = value.strip().lower()
    if _NUMBER.fullmatch(text):
        seconds = float(text)
    elif _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    else:
        raise _invalid("Cancel-After", f"must be a duration like 30s, 5m or 1h30m, or a number of seconds; got {value[:40]!r}")
    if not CANCEL_AFTER_MIN_S <= seconds <= CANCEL_AFTER_MAX_S:
        raise _invalid("Cancel-After", f"must be at least {CANCEL_AFTER_MIN_S:g} s and at most 24 h "
                                       f"({CANCEL_AFTER_MAX_S:g} s); got {seconds:g} s")
    return seconds


def prefer_wait_s(value: str | None) -> int | None:
    """The seconds a ``Prefer`` header asks a submit to wait for the result (RFC 7240): ``wait``
    -> :data:`PREFER_WAIT_MAX_S` (60), ``wait=N`` -> N (a whole number, 1-60); None when the
    header is absent or holds no ``wait`` preference (other preferences are ignored).

    Raises:
        ValidationError: 422 naming ``["header", "Prefer"]``: a ``wait`` value that is not a
            whole number of seconds from 1 to 60.
    """
    if value is None:
        return None
    for preference in value.split(","):
        name, sep, raw = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue
        if not sep:
            return PREFER_WAIT_MAX_S
        text = raw.strip().strip('"')
        if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= PREFER_WAIT_MAX_S:
            raise _invalid("Prefer", f"wait must be a whole number of seconds from 1 to {PREFER_WAIT_MAX_S}; got {raw.strip()[:20]!r}")
        return int(text)
    return None

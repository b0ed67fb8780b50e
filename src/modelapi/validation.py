"""Input rules, driven by each endpoint's spec file as data. One implementation, used by the
server (422) and by the CLI before anything is sent.

Two layers:

* :func:`check_input` — JSON Schema keywords of ``input_schema`` (required, type, enum,
  maxLength, minimum/maximum, minItems/maxItems, unknown fields), with defaults applied.
  The spec's ``"type": "float"`` means JSON number.
* :func:`check_image` — the ``validations`` rule list of an ``image_uri`` array field,
  applied to each reference image (schema: ``validations``; the message is the schema's own
  ``validation_error``).

Each problem is one ``{"loc": [...], "msg": str, "type": str}`` entry (the 422 ``detail``; README, "The API").
"""

from __future__ import annotations

import copy
import operator
import re
from functools import cache
from typing import Any

import jsonschema

Detail = dict[str, Any]

_TYPE_ALIASES = {"float": "number"}
_OPS = {
    "<=": operator.le, "≤": operator.le, ">=": operator.ge, "≥": operator.ge,
    "<": operator.lt, ">": operator.gt,
}
_RULE = re.compile(r"^(file_size_mb|width_pixels|height_pixels|width/height)\s*(<=|>=|≤|≥|<|>)$")
BYTES_PER_MB = 1024 * 1024
"""``file_size_mb`` is counted in MiB (1 MB = 1,048,576 bytes)."""


@cache
def _validator(schema_json: str) -> jsonschema.protocols.Validator:
    import json

    schema = _as_json_schema(json.loads(schema_json))
    return jsonschema.Draft202012Validator(schema)


def _as_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The spec's input_schema as standard JSON Schema: ``float`` -> ``number``, unknown fields
    refused, and the non-standard ``validations`` lists left out (they are checked per image)."""
    out = copy.deepcopy(schema)
    out["additionalProperties"] = False
    for prop in out.get("properties", {}).values():
        if prop.get("type") in _TYPE_ALIASES:
            prop["type"] = _TYPE_ALIASES[prop["type"]]
        prop.pop("validations", None)
    return out


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The input schema as standard JSON Schema (for /openapi.json request bodies)."""
    return _as_json_schema(schema)


def check_input(schema: dict[str, Any], body: Any) -> tuple[dict[str, Any], list[Detail]]:
    """Check ``body`` against ``schema`` (a spec's ``input_schema``).

    Returns:
        (inputs, problems): ``inputs`` is ``body`` with the schema's defaults filled in for absent
        optional fields; ``problems`` is empty when the body is valid.
    """
    import json

    if not isinstance(body, dict):
        return {}, [{"loc": ["body"], "msg": "Input should be a JSON object", "type": "type"}]
    validator = _validator(json.dumps(schema, sort_keys=True))
    errors = list(validator.iter_errors(body))
    mistyped = {tuple(e.path) for e in errors if e.validator == "type"}
    problems: list[Detail] = []
    for err in sorted(errors, key=lambda e: (list(map(str, e.path)), e.validator)):
        if tuple(err.path) in mistyped and err.validator != "type":
            continue  # a value of the wrong type gets one message: its type
        problems.extend(_detail(err, schema))
    inputs = dict(body)
    for name, prop in schema.get("properties", {}).items():
        if name not in inputs and "default" in prop and name not in schema.get("required", []):
            inputs[name] = copy.deepcopy(prop["default"])
    return inputs, problems


def _detail(err: jsonschema.ValidationError, schema: dict[str, Any]) -> list[Detail]:
    loc = ["body", *err.path]
    kind, value = err.validator, err.validator_value
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        return [{"loc": ["body", m], "msg": "Field required", "type": "missing"} for m in missing]
    if kind == "additionalProperties":
        extra = sorted(set(err.instance) - set(schema.get("properties", {})))
        return [{"loc": ["body", e], "msg": "Unknown field: not in the model's input schema", "type": "extra_forbidden"} for e in extra]
    messages = {
        "type": lambda: f"Input should be of type {_type_name(value)}",
        "enum": lambda: "Input should be one of: " + ", ".join(repr(v) for v in value),
        "maxLength": lambda: f"String should have at most {value} characters",
        "minLength": lambda: f"String should have at least {value} characters",
        "minItems": lambda: f"List should have at least {value} item{'s' if value != 1 else ''}",
        "maxItems": lambda: f"List should have at most {value} items",
        "minimum": lambda: f"Input should be greater than or equal to {value}",
        "maximum": lambda: f"Input should be less than or equal to {value}",
    }
    msg = messages[kind]() if kind in messages else err.message
    return [{"loc": loc, "msg": msg, "type": _snake(kind)}]


def _type_name(value: Any) -> str:
    return " or ".join(value) if isinstance(value, list) else str(value)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def image_fields(schema: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The array fields of ``image_uri`` items, with their ``validations`` rule lists."""
    return {
        name: prop.get("validations", [])
        for name, prop in schema.get("properties", {}).items()
        if prop.get("type") == "array" and prop.get("items", {}).get("format") == "image_uri"
    }


def check_image(
    rules: list[dict[str, Any]], *, file_bytes: int, width: int, height: int, loc: list[Any]
) -> list[Detail]:
    """Apply a ``validations`` list to one image (file size in bytes, pixel size).

    Each failing rule gives one entry whose ``msg`` is the rule's ``validation_error``; two
    rules sharing a message (e.g. width and height limits) report it once.
    Raises ``ValueError`` on a rule this module does not understand (a spec error).
    """
    metrics = {
        "file_size_mb": file_bytes / BYTES_PER_MB,
        "width_pixels": width,
        "height_pixels": height,
        "width/height": width / height if height else float("inf"),
    }
    problems: list[Detail] = []
    for rule in rules:
        m = _RULE.match(rule["validation_rule"].strip())
        if m is None:
            raise ValueError(f"unknown validation rule {rule['validation_rule']!r}")
        metric, op = m.groups()
        if not _OPS[op](metrics[metric], float(rule["validation_value"])):
            entry = {"loc": loc, "msg": rule["validation_error"], "type": "image_rule"}
            if entry not in problems:
                problems.append(entry)
    return problems


def sniff_format(data: bytes) -> str | None:
    """``"png"`` or ``"jpeg"`` from the magic bytes of ``data``; ``None`` for anything else
    (the only formats the schemas accept: "image/jpeg", "image/png")."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None

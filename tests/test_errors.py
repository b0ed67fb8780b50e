"""Errors carry their own HTTP status and wire error code; the SDK builds them from a server's
answer with :meth:`~modelapi.errors.APIStatusError.from_wire`."""

from __future__ import annotations

import pytest

from modelapi import errors
from modelapi.api.errors import BadRequest, ServiceUnavailable

CLASSES = [(errors.AuthenticationError, 401), (errors.PermissionDeniedError, 403), (errors.NotFoundError, 404),
           (errors.ValidationError, 422), (errors.RateLimitError, 429), (BadRequest, 400), (ServiceUnavailable, 503)]


@pytest.mark.parametrize(("cls", "status"), CLASSES)
def test_each_error_class_carries_its_status_and_code(cls, status):
    assert (cls.status_code, cls.error_code) == (status, status * 1000 + 1)
    error = cls("what went wrong", [{"loc": ["body"], "msg": "m", "type": "t"}], request_id="req_1")
    assert (error.status_code, error.error_code, error.error_message) == (status, status * 1000 + 1, "what went wrong")
    assert error.detail == [{"loc": ["body"], "msg": "m", "type": "t"}] and error.request_id == "req_1"
    assert str(error) == f"HTTP {status} ({status * 1000 + 1}): what went wrong"


def test_from_wire_keeps_what_the_server_sent():
    error = errors.APIStatusError.from_wire(502, 502001, "bad gateway", {"html": "..."}, "req_2")
    assert type(error) is errors.APIStatusError
    assert (error.status_code, error.error_code, error.error_message, error.detail, error.request_id) == (
        502, 502001, "bad gateway", {"html": "..."}, "req_2")
    odd = errors.ValidationError.from_wire(422, 422777, "a code this SDK does not know")
    assert (odd.status_code, odd.error_code) == (422, 422777)
    assert errors.ValidationError.error_code == 422001  # the class keeps its own
    limited = errors.RateLimitError.from_wire(429, 429001, "slow down", None, "req_3", retry_after_s=2.5)
    assert (limited.retry_after_s, limited.request_id) == (2.5, "req_3")
    assert ServiceUnavailable("shutting down").retry_after_s == 5


def test_the_base_class_needs_a_status():
    with pytest.raises(TypeError, match="status_code"):
        errors.APIStatusError("no status")


def test_server_only_errors_are_not_in_the_sdk_tree():
    from modelapi.engine.errors import EngineError, GenerationStopped

    assert not hasattr(errors, "EngineError") and not hasattr(errors, "GenerationStopped")
    assert issubclass(GenerationStopped, EngineError) and not issubclass(EngineError, errors.ModelAPIError)

"""Response shapes of the hosted contract (README, "The API"), for /openapi.json and response checking."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

StatusName = Literal["in_queue", "in_progress", "completed", "cancelled", "failed"]


class Submitted(BaseModel):
    request_id: str
    status_url: str
    result_url: str
    cancel_url: str
    ignored_fields: list[str] | None = Field(None, description="Body fields the model's schema does not know, ignored (absent when none): the first 20 names in sorted order, each cut to 100 characters")
    ignored_fields_count: int | None = Field(None, description="How many body fields were ignored in all (absent when none)")


class Output(BaseModel):
    images: list[str]
    image: str | None = Field(None, description="Set when exactly one image")


class StatusBody(BaseModel):
    request_id: str
    status: StatusName
    queue_position: int | None = Field(None, description="Only while in_queue; 0 = next")
    progress: float | None = Field(None, description="0.0-1.0, only while in_progress")
    partial_output: Output | None = Field(None, description="While in_progress: the images of the series stored so far (all but the last, which comes with completion)")
    status_url: str
    result_url: str


class DeletedBody(StatusBody):
    deleted_at: str = Field(description="When the request's outputs and inputs were deleted (ISO 8601 UTC)")


class WebhookEventState(BaseModel):
    attempts: int = Field(description="Delivery attempts made so far")
    last_status_code: int | None = Field(None, description="The receiver's last HTTP status; null when none answered")
    delivered_at: str | None = Field(None, description="When a 2xx was received")


class WebhookState(WebhookEventState):
    url: str
    events: list[WebhookEventState] | None = Field(
        None, description="With ?webhook_intermediate_status=true: each intermediate event's delivery, in order "
                          "(its webhook-id is msg_<request id>_<1-based index>)")


class ResultBody(BaseModel):
    request_id: str
    status: StatusName
    output: Output | None = None
    error: dict[str, Any] | None = Field(None, description='{"code", "message"} when failed (`deadline_exceeded`: still '
                                         'running at its Cancel-After), or cancelled at its Cancel-After before it started (`deadline`)')
    created_at: str | None = None
    finished_at: str | None = None
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    cost: float | None = Field(None, description="USD, with ?include_cost=true")
    model_id: str | None = Field(None, description="With ?include_inputs=true")
    inputs: dict[str, Any] | None = Field(None, description="With ?include_inputs=true: the input as accepted (the "
                                                         "body, with the schema's defaults filled in)")
    webhook: WebhookState | None = Field(None, description="When the submit named a webhook")
    queue_position: int | None = None
    progress: float | None = None
    partial_output: Output | None = None
    status_url: str | None = None
    result_url: str | None = None


class RequestItem(StatusBody):
    model_id: str
    created_at: str
    finished_at: str | None = None


class RequestPage(BaseModel):
    requests: list[RequestItem] = Field(description="Newest first")
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last")


class WebhookSecret(BaseModel):
    key: str = Field(description="`whsec_` + base64: the key's Standard Webhooks signing secret")


class CancelBody(BaseModel):
    request_id: str
    status: StatusName
    outcome: Literal["cancelled", "not_cancellable", "stopping"] = Field(description=(
        "`cancelled`: it was queued, or (with ?running=true) stopped while running; `not_cancellable`: running "
        "(without ?running=true) or finished; `stopping` (?running=true): asked to stop, not stopped yet within the "
        "answer's wait (it ends cancelled at its next step)"))


class Uploaded(BaseModel):
    id: str
    url: str = Field(description="Usable as an image input of this server (no network fetch)")
    bytes: int
    content_type: str


class ErrorBody(BaseModel):
    """Every error (README, "The API"): ``error_code`` is ``status * 1000 + 1``, except 402
    (10001), 403003 and 429002."""

    error_code: int
    error_message: str
    detail: Any = Field(None, description='422: a list of {"loc", "msg", "type"}, one per problem')


_ERROR_MEANING = {
    400: "Malformed JSON or wrong content type (400001)",
    401: "Missing, unknown, revoked or expired API key (401001)",
    402: "The key's budget cannot cover the request (10001); `detail`: {budget_remaining_usd, resets_at}",
    403: "A model outside the key's allow-list, or an admin route with a user key (403003)",
    404: "Unknown model, request or file; another key's request (404001)",
    409: "The request is running: it can be deleted once it has finished (409001)",
    410: "The request's outputs and inputs were deleted (retention or DELETE); `detail.deleted_at` says when (410001)",
    413: "Body over the size cap (413001)",
    422: "Input fails the schema or the image rules; `detail` names each field (422001)",
    429: "The key's submits per minute (429002, with RateLimit-* headers) or its queue cap (429001); see Retry-After",
    503: "Shutting down, or the database is unavailable; see Retry-After (503001)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer these error statuses (and 503 always:
    the database may be down)."""
    return {code: {"model": ErrorBody, "description": _ERROR_MEANING[code]} for code in sorted({*codes, 503})}

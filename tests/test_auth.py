"""Whether a key is live, decided once (:func:`modelapi.core.auth.live_key`): the routes'
authentication and the status poll's single query agree on unknown, revoked and live keys."""

from __future__ import annotations

from modelapi.core import auth
from modelapi.core.jobs import Polled
from modelapi.types import Status

SEQ = "bytedance/seedream-4-0/sequential"


def test_authentication_and_the_status_poll_agree_on_which_keys_are_live(jobs):
    key, secret = auth.create_key(jobs.db, "a")
    other, other_secret = auth.create_key(jobs.db, "b")
    jobs.create(request_id="r_a", owner_key_id=key.id, model_id=SEQ, inputs={"text": "a fox"}, input_files=[],
                seed=1, idempotency_key=None, body_hash="h", webhook=None)

    assert auth.authenticate(jobs.db, secret) == key
    assert jobs.poll("r_a", auth.hash_key(secret)) == (True, Polled(Status.IN_QUEUE, None, 0, None))
    assert jobs.poll("r_unknown", auth.hash_key(secret)) == (True, None)  # live key, no such request
    assert jobs.poll("r_a", auth.hash_key(other_secret)) == (True, None)  # live key, another key's request

    unknown = auth.KEY_PREFIX + "not-a-key"
    assert auth.authenticate(jobs.db, unknown) is None
    assert jobs.poll("r_a", auth.hash_key(unknown)) == (False, None)

    assert auth.revoke_key(jobs.db, other.id)
    assert auth.authenticate(jobs.db, other_secret) is None
    assert jobs.poll("r_a", auth.hash_key(other_secret)) == (False, None)
    assert auth.authenticate(jobs.db, secret) == key  # the other key is untouched
    assert jobs.poll("r_a", auth.hash_key(secret))[0] is True

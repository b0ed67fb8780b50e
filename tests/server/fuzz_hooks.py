"""schemathesis hooks for tests/server/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS)."""

import schemathesis


@schemathesis.hook
def map_query(context, query):  # noqa: ANN001, ANN201
    """A generated ``webhook`` URL would make the server resolve whatever host it names, and no
    test sends traffic off this machine: it becomes a loopback URL (refused by the address
    check, so the 422 path is still fuzzed)."""
    if query and "webhook" in query:
        query["webhook"] = "http://127.0.0.1:9/hook"
    return query

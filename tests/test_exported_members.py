import modelapi


def test_all_is_exactly_the_public_names():
    public = {name for name in dir(modelapi) if not name.startswith("_")}
    modules = {"client", "errors", "types", "catalog", "validation", "engine", "core", "api", "worker", "cli", "demo", "series",
               "webhooks", "shorthand", "mcp_server", "backends"}
    assert set(modelapi.__all__) == public - modules
    assert sorted(modelapi.__all__) == modelapi.__all__
    for name in modelapi.__all__:
        member = getattr(modelapi, name)
        if isinstance(member, type):
            assert member.__module__.startswith("modelapi."), name

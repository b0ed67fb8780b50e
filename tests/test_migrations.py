"""Versioned migrations (Alembic) on SQLite and a real Postgres: concurrent starts, the first key
created once, and a database made before migrations existed upgraded in place."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from modelapi.core import auth, db


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path, fleet_services):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.sqlite3'}"
    fleet_services.config_env()  # starts the session's Postgres
    return fleet_services.pg.create_database(f"mig_{tmp_path.name[-20:].lower().replace('-', '_')}")


def test_concurrent_starts_migrate_once_and_create_one_first_key(database_url, tmp_path):
    secrets = []

    def start(i: int) -> None:
        engine = db.connect(database_url)
        (tmp_path / str(i)).mkdir()
        db.migrate(engine, database_url, then=lambda conn: secrets.append(auth.ensure_initial_key(conn, tmp_path / str(i))))
        engine.dispose()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(start, range(4)))
    assert len([s for s in secrets if s]) == 1, "exactly one process creates the first key"
    engine = db.connect(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0009"
        assert {"api_keys", "requests", "files", "usage", "workers"} <= set(sa.inspect(conn).get_table_names())
        assert conn.execute(sa.select(sa.func.count()).select_from(db.api_keys)).scalar() == 1


def test_a_database_from_before_migrations_is_upgraded_in_place(database_url):
    engine = db.connect(database_url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    with engine.begin() as conn:  # the schema as the first release created it, with no version table
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text(
            "INSERT INTO requests (request_id, owner_key_id, model_id, status, inputs, input_files, seed, workflow_id,"
            " priority, attempts, billed_units, cost_usd, created_at, finished_at) VALUES ('req_old', 'key_a',"
            " 'bytedance/dreamina-4-0/edit', 'completed', '{}', '[]', 1, 'req_old.0', 2, 1, 2, 0.06,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:01')"
        ))
    db.migrate(engine, database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0009"
        row = conn.execute(sa.select(db.usage)).mappings().one()
        assert (row["request_id"], row["billed_units"], row["cost_usd"]) == ("req_old", 2, 0.06)
        assert conn.execute(sa.select(db.requests.c.run_by)).scalar() is None

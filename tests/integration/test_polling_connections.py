"""The scoring process polls PostgreSQL every few seconds on connections it keeps: reused while
they work, replaced once the server drops them (a restart, an idle timeout, a failover)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from app.scoring.store import DecisionStore, migrate
from app.settings import Settings
from tests.services import fresh_database
from training.registry import Registry


@pytest.fixture
def conninfo(settings: Settings) -> Iterator[str]:
    with fresh_database(settings, "it_poll") as db:
        yield settings.model_copy(update={"pg_db": db}).pg_conninfo(reveal=True)


def terminate(conninfo: str, pid: int) -> None:
    with psycopg.connect(conninfo, autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_kept_registry_connection_is_reused_and_replaced_once_the_server_drops_it(conninfo: str) -> None:
    Registry(conninfo).migrate()
    registry = Registry(conninfo, keep_connection=True)
    assert registry.champion() is None
    assert registry._kept is not None
    pid = registry._kept.info.backend_pid
    assert registry.get("v-nope") is None
    assert registry._kept.info.backend_pid == pid, "one connection for every poll"
    terminate(conninfo, pid)
    with pytest.raises(psycopg.OperationalError):
        registry.champion()  # the poll that finds it dropped fails (the scorer keeps its model)...
    assert registry.champion() is None  # ...and the next one reconnects
    assert registry._kept is not None
    assert registry._kept.info.backend_pid != pid
    registry.close()


def test_the_block_list_is_read_on_the_decision_writes_connection(conninfo: str) -> None:
    migrate(conninfo)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("insert into block_list (kind, value) values ('card', 'c-1'), ('merchant', 'm-1')")
    store = DecisionStore(conninfo)
    rules = store.rules(amount_limit=5_000.0)
    assert (rules.blocked_cards, rules.blocked_merchants, rules.amount_limit) == (
        frozenset({"c-1"}), frozenset({"m-1"}), 5_000.0,
    )  # fmt: skip
    assert store.conn is not None
    pid = store.conn.info.backend_pid
    assert store.rules(None).blocked_cards == {"c-1"}
    assert store.conn.info.backend_pid == pid
    terminate(conninfo, pid)
    with pytest.raises(psycopg.OperationalError):
        store.rules(None)
    assert store.conn is None, "a dropped connection is closed, so the next write reopens it"
    assert store.rules(None).blocked_merchants == {"m-1"}
    store.close()

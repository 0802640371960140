"""The ``store`` fixture, parametrized over every engine: the contract suite runs once per engine.

Server-backed engines get their server from the session-scoped fixtures in ``tests.fixtures.servers``; those are
requested lazily, so running only the SQLite cases starts no server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from clawdbot.sessions.base import SessionStore, StoreConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: Every engine the contract suite must pass.
ENGINES = ("sqlite",)



def _sqlite(request: pytest.FixtureRequest, tmp_path: Path, config: StoreConfig | None) -> SessionStore:
    from clawdbot.sessions.sqlite import SQLiteSessionStore

    return SQLiteSessionStore(tmp_path / "data", config)


_BUILDERS = {"sqlite": _sqlite}


@pytest.fixture(params=ENGINES)
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SessionStore]]:
    """Build stores of the parametrized engine (with any ``StoreConfig``); all are closed after the test."""
    built: list[SessionStore] = []

    def make(config: StoreConfig | None = None) -> SessionStore:
        store = _BUILDERS[request.param](request, tmp_path, config)
        built.append(store)
        return store

    yield make
    for store in built:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., SessionStore]) -> SessionStore:
    return make_store(StoreConfig())

"""The backends the store contract suite runs on: one `backend` fixture, one param per backend.

A backend param gives a database URL for this test; `backend(holder=...)` opens another client
(a store, as another process would) on that same database. Each backend is one entry in
BACKENDS; PostgreSQL's needs the server fixture of tests/pg.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hookctl.store import open_store
from hookctl.store.contract import Store


def _sqlite(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return f"sqlite://{tmp_path / 'contract.db'}"


def _postgres(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    # A fresh database on the session's throwaway cluster (tests/pg.py); skipped only where no
    # server can be started, and a skip fails the run under CI=true (tests/conftest.py).
    return str(request.getfixturevalue("pg_url"))


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], str]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Store]]:
    """Open clients of one fresh database of the backend under test."""
    url = BACKENDS[request.param](tmp_path, request)
    opened: list[Store] = []

    def open_client(**options: Any) -> Store:
        store = open_store(url, **options)
        opened.append(store)
        return store

    yield open_client
    for store in opened:
        store.close()


@pytest.fixture
def store(backend: Callable[..., Store]) -> Store:
    """One client of the database under test."""
    return backend()

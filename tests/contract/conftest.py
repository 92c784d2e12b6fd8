"""The backends the store contract suite runs on: one `backend` fixture, one param per backend.

A backend param gives a database URL for this test; `backend(holder=...)` opens another client
(a store, as another process would) on that same database. Adding a backend (PostgreSQL) is one
entry in BACKENDS and, if it needs a server, a fixture that starts one.
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


BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], str]] = {"sqlite": _sqlite}


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

"""The real database for tests: the request-log table locked from another session; a new,
empty PostgreSQL database beside the tests' own."""

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection


@contextlib.contextmanager
def request_log_locked() -> Iterator[None]:
    """Hold the request-log table so that nobody can insert into it, from a session of our own.

    PostgreSQL: ``LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`` (what a migration or VACUUM FULL
    takes). SQLite: ``BEGIN IMMEDIATE``, the database's one write lock.
    """
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        lite = sqlite3.connect(db["NAME"], isolation_level=None, timeout=20)
        try:
            lite.execute("BEGIN IMMEDIATE")
            yield
            lite.execute("ROLLBACK")
        finally:
            lite.close()
        return
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"]
    ) as pg:
        pg.execute("LOCK TABLE reporting_requestlog IN ACCESS EXCLUSIVE MODE")
        yield
        pg.rollback()


@contextlib.contextmanager
def empty_postgres_database(suffix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database named after the tests' own plus ``suffix``,
    dropped afterwards. Skipped without PostgreSQL in DATABASE_URL (a failure in CI)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        message = "needs PostgreSQL: set DATABASE_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_{suffix}"
    server = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""Faults of the real database for tests: the request-log table locked from another session."""

import contextlib
import sqlite3
from collections.abc import Iterator

import psycopg
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

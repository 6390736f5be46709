"""Python's `libsql-client` (from PyPI), unchanged, against `donut-host serve`.

tests/all/clients.rs starts the server and runs this with the URL and token
in the environment; by hand:
    DONUT_URL=http://127.0.0.1:PORT DONUT_TOKEN=... DONUT_DB_PREFIX=py- \
        python3 clients/python/libsql_check.py
It prints one line per check and exits non-zero on the first failure.
"""

import os
import time

import libsql_client


def required(name):
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set (see the top of this file)")
    return value


BASE = required("DONUT_URL")
TOKEN = required("DONUT_TOKEN")
PREFIX = required("DONUT_DB_PREFIX")
RUN = format(int(time.time() * 1000), "x")


def client(name):
    """A client of database `name` (the trailing slash selects it)."""
    return libsql_client.create_client_sync(
        f"{BASE}/db/{PREFIX}{name}-{RUN}/", auth_token=TOKEN
    )


def check_execute():
    with client("execute") as db:
        db.execute("create table t(i integer, r real, x text, b blob, n)")
        big = 2**62 + 1
        rs = db.execute(
            "insert into t values (?, ?, ?, ?, ?)",
            [big, 1.5, "héllo", b"\x00\x01\xff", None],
        )
        assert rs.rows_affected == 1, rs.rows_affected
        assert rs.last_insert_rowid == 1, rs.last_insert_rowid
        db.execute("insert into t(i, x) values (:i, :x)", {"i": 2, "x": "named"})
        rs = db.execute("select i, r, x, b, n from t order by i")
        assert rs.columns == ("i", "r", "x", "b", "n"), rs.columns
        assert [tuple(row) for row in rs.rows] == [
            (2, None, "named", None, None),
            (big, 1.5, "héllo", b"\x00\x01\xff", None),
        ], [tuple(row) for row in rs.rows]
        assert rs.rows[1]["x"] == "héllo"


def check_batch():
    with client("batch") as db:
        db.execute("create table b(id integer primary key, v text)")
        results = db.batch(
            [("insert into b values (?, ?)", [1, "a"]), "select count(*) from b"]
        )
        assert results[1].rows[0][0] == 1, results[1].rows
        try:
            db.batch(
                [
                    ("insert into b values (?, ?)", [2, "b"]),
                    ("insert into b values (?, ?)", [1, "duplicate"]),
                ]
            )
        except libsql_client.LibsqlError as e:
            assert e.code.startswith("SQLITE_CONSTRAINT"), e.code
        else:
            raise AssertionError("a batch with a duplicate key succeeded")
        rs = db.execute("select group_concat(id) from b")
        assert rs.rows[0][0] == "1", "the failed batch left nothing"


def check_errors():
    with client("errors") as db:
        try:
            db.execute("select * from nowhere")
        except libsql_client.LibsqlError as e:
            assert e.code == "SQLITE_ERROR" and "nowhere" in str(e), (e.code, str(e))
        else:
            raise AssertionError("a missing table was not an error")
        assert db.execute("select 41 + 1").rows[0][0] == 42


for check in (check_execute, check_batch, check_errors):
    check()
    print(f"ok {check.__name__}")

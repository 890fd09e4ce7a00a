"""psycopg 3 through a connection given on the command line (host port user password db):
binary and text cursors over arrays, enums, composites (registered through psycopg's own
catalog queries), records and bigints, and a binary COPY read back by psycopg's binary
loaders. Prints JSON."""
import json
import sys

import psycopg
from psycopg.types.composite import CompositeInfo, register_composite
from psycopg.types.enum import EnumInfo, register_enum

QUERIES = {
    "profiles": "SELECT id, tier, risk, tags, contact, card_number, pin, scores "
    "FROM customer_profiles ORDER BY id",
    "whole_rows": "SELECT c FROM customers_pii c ORDER BY id",
    "star": "SELECT * FROM customers_pii ORDER BY id",
    "records": "SELECT row(name, email) FROM customers_pii ORDER BY id",
    "email_array": "SELECT array_agg(email ORDER BY id) FROM customers_pii",
    "card_bigint": "SELECT card_number FROM customer_profiles ORDER BY id",
}


def plain(v):
    if hasattr(v, "name") and hasattr(v, "value") and not isinstance(v, (str, bytes)):
        return v.name  # a registered enum's member
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def main(host, port, user, password, db):
    conn = psycopg.connect(
        host=host, port=int(port), user=user, password=password, dbname=db,
        autocommit=True, sslmode="disable",
    )
    out = {}
    try:
        for name in ("postal_contact", "customers_pii"):
            register_composite(CompositeInfo.fetch(conn, name), conn)
        register_enum(EnumInfo.fetch(conn, "customer_tier"), conn)
        out["introspection"] = "ok"
    except Exception as e:
        out["introspection"] = {"error": f"{type(e).__name__}: {e}"}
    for binary in (True, False):
        suffix = "_bin" if binary else "_text"
        for name, sql in QUERIES.items():
            try:
                with conn.cursor(binary=binary) as cur:
                    cur.execute(sql)
                    out[name + suffix] = [plain(r) for r in cur.fetchall()]
            except Exception as e:
                out[name + suffix] = {"error": f"{type(e).__name__}: {e}"}
    try:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY (SELECT id, tier, tags, contact, card_number FROM customer_profiles "
                "ORDER BY id) TO STDOUT (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int4", "customer_tier", "text[]", "postal_contact", "int8"])
                out["copy_binary"] = [plain(r) for r in copy.rows()]
    except Exception as e:
        out["copy_binary"] = {"error": f"{type(e).__name__}: {e}"}
    conn.close()
    print(json.dumps(out))


main(*sys.argv[1:6])

"""asyncpg through a connection given on the command line (host port user password db):
binary results of arrays, enums, composites, records and bigints (asyncpg introspects every
type it does not know with a catalog query of its own, whose binary results hold arrays of
names and OIDs), and binary COPY. Prints JSON."""
import asyncio
import io
import json
import sys

import asyncpg

QUERIES = {
    "profiles": "SELECT id, tier, risk, tags, contact, card_number, pin, scores "
    "FROM customer_profiles ORDER BY id",
    "whole_rows": "SELECT c FROM customers_pii c ORDER BY id",
    "star": "SELECT * FROM customers_pii ORDER BY id",
    "records": "SELECT row(name, email) FROM customers_pii ORDER BY id",
    "email_array": "SELECT array_agg(email ORDER BY id) FROM customers_pii",
    "card_bigint": "SELECT card_number FROM customer_profiles ORDER BY id",
    "contact_array": "SELECT array_agg(contact ORDER BY id) FROM customer_profiles",
}


def plain(v):
    if isinstance(v, asyncpg.Record):
        return [plain(x) for x in v.values()]
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


async def main(host, port, user, password, db):
    conn = await asyncpg.connect(
        host=host, port=int(port), user=user, password=password, database=db, ssl=False
    )
    out = {}
    for name, sql in QUERIES.items():
        try:
            out[name] = [plain(r) for r in await conn.fetch(sql)]
        except Exception as e:  # the test reads the error
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    for name, sql in {
        "copy_binary": "SELECT id, tier, tags, contact, card_number FROM customer_profiles ORDER BY id",
        "copy_binary_plain": "SELECT id, name, balance FROM customers_pii ORDER BY id",
    }.items():
        buf = io.BytesIO()
        try:
            await conn.copy_from_query(sql, output=buf, format="binary")
            out[name] = buf.getvalue().hex()
        except Exception as e:
            out[name] = {"error": f"{type(e).__name__}: {e}"}
    await conn.close()
    print(json.dumps(out))


asyncio.run(main(*sys.argv[1:6]))

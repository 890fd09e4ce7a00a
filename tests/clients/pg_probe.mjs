// node-postgres through a connection given on the command line (host port user password db):
// the same queries by the simple protocol and by the extended one (Parse/Describe/Execute),
// decoded by node-postgres' own type parsers (arrays into arrays, bigints to strings), and
// text-typed results with `binary: true` (results in binary format). pg-protocol 1.x decodes
// every binary value as UTF-8 text, so binary ints, arrays and composites are garbled even on a
// direct connection: only text-typed values are compared in binary. Prints JSON.
import pg from 'pg';

const [host, port, user, password, database] = process.argv.slice(2);
const queries = {
  profiles: 'SELECT id, tier, risk, tags, contact, card_number, pin, scores FROM customer_profiles ORDER BY id',
  whole_rows: 'SELECT c FROM customers_pii c ORDER BY id',
  records: 'SELECT row(name, email) FROM customers_pii ORDER BY id',
  email_array: 'SELECT array_agg(email ORDER BY id) FROM customers_pii',
  card_bigint: 'SELECT card_number FROM customer_profiles ORDER BY id',
  text_columns: 'SELECT name, email, ssn, notes FROM customers_pii ORDER BY id',
};
// Queries whose every output is text-typed, also run with `binary: true`.
const textTyped = ['text_columns'];
const plain = (v) => {
  if (Buffer.isBuffer(v)) return v.toString('hex');
  if (Array.isArray(v)) return v.map(plain);
  if (v instanceof Date) return v.toISOString();
  return v;
};
const client = new pg.Client({ host, port: Number(port), user, password, database, ssl: false });
await client.connect();
// An array of the enum type, parsed as node-postgres parses text[].
const { rows } = await client.query("SELECT 'customer_tier[]'::regtype::oid AS oid");
pg.types.setTypeParser(Number(rows[0].oid), pg.types.getTypeParser(1009));
const out = {};
for (const mode of ['simple', 'extended']) {
  for (const [name, text] of Object.entries(queries)) {
    const key = `${name}_${mode}`;
    try {
      const r = await client.query({ text, rowMode: 'array', queryMode: mode === 'extended' ? 'extended' : undefined });
      out[key] = r.rows.map(plain);
    } catch (e) {
      out[key] = { error: e.message };
    }
  }
}
for (const name of textTyped) {
  try {
    const r = await client.query({ text: queries[name], rowMode: 'array', binary: true, queryMode: 'extended' });
    out[`${name}_binary`] = r.rows.map(plain);
    out[`${name}_binary_formats`] = r.fields.map((f) => f.format);
  } catch (e) {
    out[`${name}_binary`] = { error: e.message };
  }
}
await client.end();
console.log(JSON.stringify(out));

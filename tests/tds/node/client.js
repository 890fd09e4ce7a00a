// Promise helpers over tedious for the SQL Server gateway's end-to-end tests
// (tests/tds_clients.rs). Each test writes a short script that requires this file; what the
// script prints is what the test asserts on.
'use strict';

const { Connection, Request } = require('tedious');

/** Log in with `config` (a tedious connection config); resolves to the open connection. */
function connect(config) {
  return new Promise((resolve, reject) => {
    const conn = new Connection(config);
    conn.on('error', () => {});
    // TDS_DEBUG=1 prints tedious's own trace of packets and tokens.
    if (process.env.TDS_DEBUG) conn.on('debug', (m) => console.error('debug', m));
    conn.connect((err) => (err ? reject(err) : resolve(conn)));
  });
}

/**
 * A tedious config for connection `sales` through the gateway at `port`: `encrypt` is false,
 * true or 'strict'; the caller is proven by an access key as the SQL login's password, or by a
 * token in LOGIN7's FEDAUTH extension.
 */
function config({ port, encrypt, key, token }) {
  return {
    server: 'localhost',
    authentication: token
      ? { type: 'azure-active-directory-access-token', options: { token } }
      : { type: 'default', options: { userName: 'pipeline', password: key } },
    options: {
      port,
      database: 'sales',
      encrypt,
      trustServerCertificate: false,
      connectTimeout: 10000,
      requestTimeout: 10000,
      debug: { packet: true, token: true, payload: true },
    },
  };
}

/** Run `sql` as a SQL batch; resolves to `{ rows, rowCount }`, each row an array of values. */
function query(conn, sql) {
  return new Promise((resolve, reject) => {
    const rows = [];
    const request = new Request(sql, (err, rowCount) =>
      err ? reject(err) : resolve({ rows, rowCount }),
    );
    request.on('row', (columns) => rows.push(columns.map((c) => c.value)));
    conn.execSqlBatch(request);
  });
}

/**
 * What every client test checks, printed with `label`: the rows of `read`, the refusal of a
 * DDL statement (or `DDL RAN`), then that the session still answers.
 */
async function probe(conn, label, read) {
  const r = await query(conn, read);
  for (const row of r.rows) console.log(label, 'ROW', row.join('|'));
  try {
    await query(conn, 'DROP TABLE customers');
    console.log(label, 'DDL RAN');
  } catch (e) {
    console.log(label, 'REFUSED', e.number, e.message);
  }
  const after = await query(conn, 'SELECT 1');
  console.log(label, 'AFTER', after.rows.map((row) => row.join('|')).join(','));
}

/** Start `sql`, cancel it after `afterMs` (tedious sends an Attention); resolves to the error. */
function cancelled(conn, sql, afterMs) {
  return new Promise((resolve) => {
    const request = new Request(sql, (err) => resolve(err || null));
    conn.execSqlBatch(request);
    setTimeout(() => request.cancel(), afterMs);
  });
}

/** Promise forms of the transaction API, which sends transaction-manager requests. */
const begin = (conn) => new Promise((ok, no) => conn.beginTransaction((e) => (e ? no(e) : ok())));
const commit = (conn) => new Promise((ok, no) => conn.commitTransaction((e) => (e ? no(e) : ok())));
const rollback = (conn) =>
  new Promise((ok, no) => conn.rollbackTransaction((e) => (e ? no(e) : ok())));

/** Close `conn`; resolves once the socket is closed. */
function close(conn) {
  return new Promise((resolve) => {
    conn.on('end', resolve);
    conn.close();
  });
}

/** Run `main`, print an uncaught error as `FAILED <message>` and exit non-zero. */
function run(main) {
  main().then(
    () => process.exit(0),
    (err) => {
      console.log('FAILED', err && (err.code || ''), err && err.message);
      process.exit(1);
    },
  );
}

module.exports = { config, connect, query, probe, cancelled, begin, commit, rollback, close, run };

//! Approval requests in the SQLite store: one row per request, the whole request as JSON in
//! `body`, and the columns listings filter on. `version` guards read-modify-write between
//! processes sharing the file. (A child module of `sqlite` so that it uses the same
//! connections.)

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::{SqliteStore, lock};
use crate::approvals::{ApprovalFilter, ApprovalKind, ApprovalRequest, ApprovalStore};
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS approvals (
    id              TEXT PRIMARY KEY,
    version         INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    connection      TEXT NOT NULL,
    principal       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    node            TEXT,
    created_us      INTEGER NOT NULL,
    expires_us      INTEGER NOT NULL,
    window_until_us INTEGER,
    body            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals(state);
CREATE INDEX IF NOT EXISTS approvals_created ON approvals(created_us);
";

const COLUMNS: &str = "id, version, body";

/// Create the approvals table (called when the store is opened).
pub(super) fn init_schema(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn node_of(req: &ApprovalRequest) -> Option<&str> {
    match &req.kind {
        ApprovalKind::OneTime { node, .. } => Some(node),
        ApprovalKind::Window { .. } => None,
    }
}

fn body_of(req: &ApprovalRequest) -> Result<String> {
    serde_json::to_string(req).map_err(|e| Error::Store(format!("approval {}: {e}", req.id)))
}

/// A request from an `id, version, body` row; the column version is the authoritative one.
fn from_row(row: &rusqlite::Row<'_>) -> Result<ApprovalRequest> {
    let id: String = row.get(0)?;
    let version: i64 = row.get(1)?;
    let body: String = row.get(2)?;
    let mut req: ApprovalRequest = serde_json::from_str(&body).map_err(|e| {
        Error::Store(format!(
            "approval {id}: stored content is not a request: {e}"
        ))
    })?;
    req.version = u64::try_from(version)
        .map_err(|_| Error::Store(format!("approval {id}: invalid version {version}")))?;
    Ok(req)
}

fn collect(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<ApprovalRequest>> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

impl ApprovalStore for SqliteStore {
    fn create_approval(&self, req: &ApprovalRequest) -> Result<()> {
        let body = body_of(req)?;
        lock(&self.writer).conn.execute(
            "INSERT INTO approvals (id, version, kind, state, connection, principal, subject, \
             node, created_us, expires_us, window_until_us, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                req.id,
                clamp(req.version),
                req.kind.tag(),
                req.state.as_str(),
                req.connection,
                req.requester.principal,
                req.requester.subject,
                node_of(req),
                req.created_us,
                req.expires_us,
                req.window_until_us,
                body,
            ],
        )?;
        Ok(())
    }

    fn approval(&self, id: &str) -> Result<Option<ApprovalRequest>> {
        let sql = format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1");
        let found = self.read(|conn| collect(conn, &sql, vec![Value::Text(id.to_string())]))?;
        Ok(found.into_iter().next())
    }

    fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<ApprovalRequest>> {
        if filter.limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut sql = format!("SELECT {COLUMNS} FROM approvals WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        let mut cond = |sql: &mut String, clause: &str, v: String| {
            args.push(Value::Text(v));
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(s) = filter.state {
            cond(&mut sql, " AND state = ?", s.as_str().to_string());
        }
        if let Some(k) = filter.kind {
            cond(&mut sql, " AND kind = ?", k.to_string());
        }
        if let Some(c) = &filter.connection {
            cond(&mut sql, " AND connection = ?", c.clone());
        }
        if let Some(who) = &filter.requester {
            cond(&mut sql, " AND (principal = ? OR subject = ?)", who.clone());
        }
        if let Some(n) = &filter.node {
            cond(&mut sql, " AND node = ?", n.clone());
        }
        let out = match filter.limit {
            Some(n) => {
                sql.push_str(&format!(
                    " ORDER BY created_us DESC, id DESC LIMIT {}",
                    clamp(n as u64)
                ));
                let mut v = self.read(|conn| collect(conn, &sql, args))?;
                v.reverse();
                v
            }
            None => {
                sql.push_str(" ORDER BY created_us, id");
                self.read(|conn| collect(conn, &sql, args))?
            }
        };
        Ok(out)
    }

    fn update_approval(&self, req: &ApprovalRequest) -> Result<bool> {
        let body = body_of(req)?;
        let n = lock(&self.writer).conn.execute(
            "UPDATE approvals SET version = ?2, state = ?3, expires_us = ?4, \
             window_until_us = ?5, body = ?6 WHERE id = ?1 AND version = ?7",
            params![
                req.id,
                clamp(req.version.saturating_add(1)),
                req.state.as_str(),
                req.expires_us,
                req.window_until_us,
                body,
                clamp(req.version),
            ],
        )?;
        Ok(n == 1)
    }

    fn active_windows(&self, now_us: i64) -> Result<Vec<ApprovalRequest>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals WHERE kind = 'window' AND state = 'approved' \
             AND window_until_us > ?1 ORDER BY created_us"
        );
        self.read(|conn| collect(conn, &sql, vec![Value::Integer(now_us)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approvals::{State, Vote, fingerprint, new_approval_id};
    use crate::event::IdentityRecord;
    use crate::identity::Identity;
    use crate::store::sqlite::tests::TempDir;

    pub(crate) fn sample(kind: ApprovalKind, subject: &str, created_us: i64) -> ApprovalRequest {
        ApprovalRequest {
            id: new_approval_id(),
            version: 0,
            kind,
            requester: IdentityRecord::from(&Identity::for_tests("entra", subject, &["dev"])),
            connection: "orders".into(),
            action: "sql.write".into(),
            reason: Some("ticket 42".into()),
            policies: vec!["writes".into()],
            required: 2,
            approver_groups: vec!["dba".into()],
            votes: Vec::new(),
            state: State::Pending,
            created_us,
            expires_us: created_us + 900_000_000,
            window_until_us: None,
            closed_us: None,
            closed_by: None,
            closed_reason: None,
            used_us: None,
            used_by: None,
        }
    }

    fn held(node: &str) -> ApprovalKind {
        ApprovalKind::OneTime {
            fingerprint: fingerprint("delete from t", &[]),
            statement: "delete from t".into(),
            session: "s1".into(),
            parameters: Vec::new(),
            tables: Vec::new(),
            node: node.into(),
            grant: false,
        }
    }

    #[test]
    fn round_trip_filters_and_optimistic_updates() {
        let dir = TempDir::new("approvals-store");
        let path = dir.path().join("gw.db");
        let store = SqliteStore::open(&path).unwrap();
        let a = sample(held("n1"), "alice", 10);
        let mut b = sample(ApprovalKind::Window { window_secs: 60 }, "bob", 20);
        b.connection = "billing".into();
        store.create_approval(&a).unwrap();
        store.create_approval(&b).unwrap();
        assert!(store.create_approval(&a).is_err(), "ids are unique");
        assert_eq!(store.approval(&a.id).unwrap().as_ref(), Some(&a));
        assert_eq!(store.approval("apr_none").unwrap(), None);

        let all = store.list_approvals(&ApprovalFilter::default()).unwrap();
        assert_eq!(
            all.iter().map(|r| &r.id).collect::<Vec<_>>(),
            vec![&a.id, &b.id]
        );
        let f = |filter: ApprovalFilter| {
            store
                .list_approvals(&filter)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            f(ApprovalFilter {
                connection: Some("billing".into()),
                ..Default::default()
            }),
            vec![b.id.clone()]
        );
        assert_eq!(
            f(ApprovalFilter {
                requester: Some("entra/alice".into()),
                ..Default::default()
            }),
            vec![a.id.clone()]
        );
        assert_eq!(
            f(ApprovalFilter {
                requester: Some("bob".into()),
                ..Default::default()
            }),
            vec![b.id.clone()]
        );
        assert_eq!(
            f(ApprovalFilter {
                kind: Some("window"),
                ..Default::default()
            }),
            vec![b.id.clone()]
        );
        assert_eq!(
            f(ApprovalFilter {
                node: Some("n1".into()),
                ..Default::default()
            }),
            vec![a.id.clone()]
        );
        assert_eq!(
            f(ApprovalFilter {
                limit: Some(1),
                ..Default::default()
            }),
            vec![b.id.clone()]
        );

        // A stale version loses; the fresh one wins and bumps the version.
        let mut granted = b.clone();
        granted.votes.push(Vote {
            who: "entra/carol".into(),
            subject: "carol".into(),
            issuer: "entra".into(),
            display_name: None,
            at_us: 30,
            approve: true,
            reason: None,
        });
        granted.state = State::Approved;
        granted.window_until_us = Some(30 + 60_000_000);
        assert!(store.update_approval(&granted).unwrap());
        assert!(
            !store.update_approval(&granted).unwrap(),
            "version 0 is stale now"
        );
        let stored = store.approval(&b.id).unwrap().unwrap();
        assert_eq!(stored.version, 1);
        assert_eq!(stored.state, State::Approved);
        assert_eq!(
            f(ApprovalFilter {
                state: Some(State::Approved),
                ..Default::default()
            }),
            vec![b.id.clone()]
        );

        assert_eq!(store.active_windows(31).unwrap().len(), 1);
        assert!(store.active_windows(30 + 60_000_000).unwrap().is_empty());

        // Survives reopening.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.approval(&b.id).unwrap(), Some(stored));
    }

    #[test]
    fn in_memory_store_has_the_table() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = sample(held("n1"), "alice", 1);
        store.create_approval(&a).unwrap();
        assert_eq!(store.approval(&a.id).unwrap().map(|r| r.id), Some(a.id));
    }
}

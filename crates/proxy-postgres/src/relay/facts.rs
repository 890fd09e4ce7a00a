//! The target's catalog facts for deciding calls ([`CatalogFacts`]): which allow-listed
//! function names also exist as user functions, which operators and casts run user
//! functions. Looked up on a side connection, once per target and shared by its sessions;
//! again after a minute, and after a session's own DDL (that session decides with no facts,
//! which fails closed, until its DDL is committed and looked up again). Statements are then
//! decided against the session's snapshot without waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gateway_core::action::SqlKind;
use gateway_core::sql::{CatalogFacts, MAX_FACTS};

use crate::codec::{self, tags::backend as be};
use crate::ctx::SessionCtx;
use crate::mask::catalog::Catalog;

/// How long a lookup stands: functions, operators and casts created by other sessions are
/// seen after at most this long.
const MAX_AGE: Duration = Duration::from_secs(60);

/// Targets whose facts are kept, at most (the map starts over past it).
const MAX_TARGETS: usize = 1_000;

/// One lookup: the facts (`None`: the catalog could not say) and when they were taken.
type Snapshot = (Option<Arc<CatalogFacts>>, Instant);

/// The facts of every target, shared by all sessions of the listener.
#[derive(Default)]
pub(crate) struct FactsRegistry {
    targets: Mutex<HashMap<String, Arc<TargetFacts>>>,
}

impl FactsRegistry {
    /// The shared facts of the session's target.
    pub fn for_target(&self, conn: &gateway_core::config::ConnectionConfig) -> Arc<TargetFacts> {
        let key = format!(
            "{}\0{}\0{}",
            conn.name,
            conn.target,
            conn.database.as_deref().unwrap_or_default()
        );
        let mut map = self.targets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_TARGETS && !map.contains_key(&key) {
            map.clear();
        }
        map.entry(key).or_default().clone()
    }
}

/// The last lookup for one target.
#[derive(Default)]
pub(crate) struct TargetFacts {
    last: Mutex<Option<Snapshot>>,
}

/// A session's view of the facts.
#[derive(Default)]
pub(super) struct SessionFacts {
    snapshot: Option<Snapshot>,
    /// The session ran something that may have created a function, operator or cast that
    /// the last lookup cannot know of.
    changed: bool,
}

impl SessionFacts {
    /// The facts to decide with: `None` until looked up, after a failed lookup, and while the
    /// session's own changes are not looked up yet.
    pub fn current(&self) -> Option<&CatalogFacts> {
        if self.changed {
            return None;
        }
        self.snapshot.as_ref().and_then(|(f, _)| f.as_deref())
    }

    /// Note a statement the session is about to run: one that may create functions,
    /// operators or casts (DDL, admin, unknown) makes the facts stale. Functions created by a
    /// called function are seen at the next lookup, within a minute.
    pub fn note(&mut self, kind: SqlKind) {
        if kind >= SqlKind::Ddl {
            self.changed = true;
        }
    }

    /// Bring the facts up to date when they are missing, old, or stale after the session's
    /// own changes and the session is `idle` (its changes committed or gone).
    pub async fn refresh(
        &mut self,
        ctx: &SessionCtx,
        shared: &TargetFacts,
        idle: impl FnOnce() -> bool,
    ) {
        if self.changed {
            if !idle() {
                return;
            }
        } else {
            // Another session's lookup (after its DDL, say) is taken up when newer.
            let last = shared.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = last.as_ref().filter(|s| s.1.elapsed() < MAX_AGE) {
                if self.snapshot.as_ref().is_none_or(|own| own.1 < s.1) {
                    self.snapshot = Some(s.clone());
                }
                return;
            }
        }
        let facts = lookup(ctx).await.map(Arc::new);
        let snap = (facts, Instant::now());
        *shared.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(snap.clone());
        self.snapshot = Some(snap);
        self.changed = false;
    }
}

/// User functions by name, operators and casts backed by user functions, in one bounded
/// query on a side connection that is closed again; `None` if it failed or found too much.
async fn lookup(ctx: &SessionCtx) -> Option<CatalogFacts> {
    let sql = format!(
        "SELECT k, a, b, c FROM (\
         SELECT 'f' AS k, p.proname::text AS a, NULL::text AS b, NULL::text AS c \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') GROUP BY p.proname \
         UNION ALL SELECT 'o', o.oprname::text, p.proname::text, NULL \
         FROM pg_catalog.pg_operator o \
         JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
         JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode WHERE n.nspname <> 'pg_catalog' \
         UNION ALL SELECT 'c', t.typname::text, p.proname::text, c.castcontext::text \
         FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         JOIN pg_catalog.pg_type t ON t.oid = c.casttarget WHERE n.nspname <> 'pg_catalog'\
         ) x LIMIT {}",
        MAX_FACTS + 1
    );
    let mut side = Catalog::default();
    let mut facts = CatalogFacts::default();
    let mut ok = true;
    let mut rows = 0usize;
    let answered = side
        .ask(
            ctx,
            |out| codec::put_query(out, &sql),
            |tag, body| {
                if tag == be::ERROR {
                    ok = false;
                }
                if tag != be::DATA_ROW {
                    return;
                }
                rows += 1;
                let row = codec::parse_data_row(body).ok();
                let s = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
                let fields: Option<Vec<Option<String>>> = row
                    .as_deref()
                    .map(|r| r.iter().map(|f| f.and_then(s)).collect());
                let within = match fields.as_deref() {
                    Some([Some(k), Some(a), _, _]) if k == "f" => facts.add_function(a),
                    Some([Some(k), Some(a), Some(b), _]) if k == "o" => facts.add_operator(a, b),
                    Some([Some(k), Some(a), Some(b), Some(c)]) if k == "c" => {
                        facts.add_cast(a, b, c != "e")
                    }
                    _ => false,
                };
                ok &= within;
            },
        )
        .await;
    (answered && ok && rows <= MAX_FACTS).then_some(facts)
}

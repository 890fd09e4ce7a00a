//! The catalog side-connection: a second connection to the target, opened lazily with the
//! session's held credential, that names the origin of result columns (table OID and
//! attribute number → `schema.table` and column) and describes COPY sources. Answers are
//! cached per session. When it can't answer (login refused, timeout), the columns stay
//! unresolved and are masked as columns of unknown origin.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::views::ViewOrigin;
use crate::codec::{self, tags::backend as be};
use crate::session::SessionCtx;

/// Longest the catalog may take to answer one question (login included).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Catalog answers are small; anything bigger is refused.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Cached origins per session, at most (the cache starts over past it).
const MAX_CACHED: usize = 10_000;
/// Columns asked about in one query, at most.
const MAX_BATCH: usize = 1_000;

/// Where a result column comes from.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `schema.table`.
    pub table: Arc<str>,
    pub column: Arc<str>,
    /// For a view's column: where the view takes it from.
    pub view: Option<Arc<ViewOrigin>>,
}

/// One column of a described statement.
#[derive(Debug, Clone)]
pub(crate) struct Described {
    pub name: String,
    pub table_oid: u32,
    pub column_id: i16,
    pub type_oid: u32,
}

/// The side connection and its answers.
#[derive(Default)]
pub(crate) struct Catalog {
    conn: Option<(crate::stream::TargetStream, BytesMut)>,
    /// Login failed once: don't try again in this session (every column stays unresolved).
    unavailable: bool,
    origins: HashMap<(u32, i16), Option<Origin>>,
    /// User-defined types of result columns: for a table's row type (or an array of one),
    /// the table's columns; `None` for any other type (domain, enum, extension type).
    rowtypes: HashMap<u32, Option<Arc<[Origin]>>>,
}

/// Key under which [`Catalog::resolve`] takes a type to look up rather than a column.
pub(crate) const TYPE_KEY: i16 = 0;

impl Catalog {
    /// The cached answer for a column: `None` if never asked, `Some(None)` if unresolved.
    pub fn origin(&self, key: (u32, i16)) -> Option<&Option<Origin>> {
        self.origins.get(&key)
    }

    /// The cached answer for a type: `None` if never asked, `Some(None)` if it is not a row
    /// type (or could not be looked up), else the row's columns.
    pub fn rowtype(&self, type_oid: u32) -> Option<&Option<Arc<[Origin]>>> {
        self.rowtypes.get(&type_oid)
    }

    /// Ask about the columns (and, keyed `(type, TYPE_KEY)`, the types) not cached yet;
    /// afterwards every key has an answer (possibly unresolved).
    pub async fn resolve(&mut self, ctx: &SessionCtx, keys: &[(u32, i16)]) {
        let mut types: Vec<u32> = keys
            .iter()
            .filter(|k| k.1 == TYPE_KEY && k.0 != 0 && !self.rowtypes.contains_key(&k.0))
            .map(|k| k.0)
            .collect();
        types.sort_unstable();
        types.dedup();
        if !types.is_empty() {
            if self.rowtypes.len() + types.len() > MAX_CACHED {
                self.rowtypes.clear();
            }
            for chunk in types.chunks(MAX_BATCH) {
                self.resolve_types(ctx, chunk).await;
            }
        }
        let mut wanted: Vec<(u32, i16)> = keys
            .iter()
            .copied()
            .filter(|k| k.0 != 0 && k.1 > 0 && !self.origins.contains_key(k))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return;
        }
        if self.origins.len() + wanted.len() > MAX_CACHED {
            self.origins.clear();
        }
        for chunk in wanted.chunks(MAX_BATCH) {
            self.resolve_some(ctx, chunk).await;
        }
    }

    async fn resolve_some(&mut self, ctx: &SessionCtx, wanted: &[(u32, i16)]) {
        let mut sql = String::from(
            "SELECT a.attrelid, a.attnum, n.nspname, c.relname, a.attname, \
             CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE (a.attrelid, a.attnum) IN (",
        );
        for (i, (oid, att)) in wanted.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(sql, "{sep}({oid}::oid,{att}::int2)");
        }
        sql.push(')');
        let mut found = HashMap::new();
        let mut defs: HashMap<u32, String> = HashMap::new();
        let answered = self
            .ask(
                ctx,
                |out| codec::put_query(out, &sql),
                |tag, body| {
                    if tag == be::DATA_ROW
                        && let Ok(v) = codec::parse_data_row(body)
                        && let [Some(oid), Some(att), Some(ns), Some(rel), Some(col), def] = v[..]
                    {
                        let num = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
                        if let (Some(oid), Some(att)) = (num(oid), num(att)) {
                            let table = format!(
                                "{}.{}",
                                String::from_utf8_lossy(ns),
                                String::from_utf8_lossy(rel)
                            );
                            if let Some(def) = def {
                                defs.insert(oid as u32, String::from_utf8_lossy(def).into_owned());
                            }
                            found.insert(
                                (oid as u32, att as i16),
                                Origin {
                                    table: Arc::from(table),
                                    column: Arc::from(String::from_utf8_lossy(col).as_ref()),
                                    view: None,
                                },
                            );
                        }
                    }
                },
            )
            .await;
        if !defs.is_empty() {
            let views = self.views(ctx, &defs).await;
            for ((oid, att), o) in found.iter_mut() {
                if let Some(v) = views.get(oid) {
                    o.view = Some(Arc::new(v.column(*att)));
                }
            }
        }
        if !answered {
            tracing::warn!("catalog lookup failed: result columns are masked as of unknown origin");
        }
        for k in wanted {
            let o = found.remove(k);
            self.origins.insert(*k, o);
        }
    }

    /// Which of `wanted` are a table's row type (or an array of one), with that table's
    /// columns. A type the lookup does not answer for counts as no row type; the caller
    /// treats an anonymous record as covered anyway.
    async fn resolve_types(&mut self, ctx: &SessionCtx, wanted: &[u32]) {
        let mut sql = String::from(
            "SELECT t.oid, n.nspname, c.relname, a.attname \
             FROM pg_catalog.pg_type t \
             LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem \
             JOIN pg_catalog.pg_class c ON c.oid = COALESCE(NULLIF(t.typrelid, 0), e.typrelid) \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
             AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE t.oid IN (",
        );
        for (i, oid) in wanted.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(sql, "{sep}{oid}::oid");
        }
        sql.push(')');
        let mut found: HashMap<u32, Vec<Origin>> = HashMap::new();
        let answered = self
            .ask(
                ctx,
                |out| codec::put_query(out, &sql),
                |tag, body| {
                    if tag == be::DATA_ROW
                        && let Ok(v) = codec::parse_data_row(body)
                        && let [Some(oid), Some(ns), Some(rel), Some(col)] = v[..]
                        && let Some(oid) = std::str::from_utf8(oid)
                            .ok()
                            .and_then(|o| o.parse::<u32>().ok())
                    {
                        let table = format!(
                            "{}.{}",
                            String::from_utf8_lossy(ns),
                            String::from_utf8_lossy(rel)
                        );
                        found.entry(oid).or_default().push(Origin {
                            table: Arc::from(table),
                            column: Arc::from(String::from_utf8_lossy(col).as_ref()),
                            view: None,
                        });
                    }
                },
            )
            .await;
        if !answered {
            tracing::warn!("catalog lookup of result types failed: whole-row values are masked");
        }
        for t in wanted {
            let cols = found.remove(t).map(Arc::from);
            // Unanswered: remember as a row type with no known columns, so it is masked.
            let cols = if answered {
                cols
            } else {
                Some(Arc::from(Vec::new()))
            };
            self.rowtypes.insert(*t, cols);
        }
    }

    /// Describe a query without running it (Parse + Describe on the side connection).
    /// `None` if it can't be described there (syntax, a temporary table of the session...).
    pub async fn describe(&mut self, ctx: &SessionCtx, query: &str) -> Option<Vec<Described>> {
        let mut cols = None;
        let mut failed = false;
        let answered = self
            .ask(
                ctx,
                |out| {
                    let p = codec::Parse {
                        name: "",
                        query,
                        param_types: Vec::new(),
                    };
                    if codec::put_parse(out, &p).is_ok() {
                        codec::put_describe(out, b'S', "");
                    }
                    codec::put_sync(out);
                },
                |tag, body| match tag {
                    be::ROW_DESCRIPTION => {
                        cols = codec::parse_row_description(body).ok().map(|f| {
                            f.iter()
                                .map(|f| Described {
                                    name: f.name.to_string(),
                                    table_oid: f.table_oid,
                                    column_id: f.column_id,
                                    type_oid: f.type_oid,
                                })
                                .collect::<Vec<_>>()
                        })
                    }
                    be::NO_DATA => cols = Some(Vec::new()),
                    be::ERROR => failed = true,
                    _ => {}
                },
            )
            .await;
        if !answered || failed {
            return None;
        }
        cols
    }

    /// Send one request and read to ReadyForQuery, calling `each` per message. False when
    /// the side connection is unavailable or broke (it is then dropped).
    pub(super) async fn ask(
        &mut self,
        ctx: &SessionCtx,
        request: impl FnOnce(&mut BytesMut),
        each: impl FnMut(u8, &[u8]),
    ) -> bool {
        if self.unavailable {
            return false;
        }
        let mut out = BytesMut::new();
        request(&mut out);
        let r = tokio::time::timeout(TIMEOUT, self.exchange(ctx, &out, each)).await;
        match r {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "catalog side-connection failed");
                self.conn = None;
                false
            }
            Err(_) => {
                tracing::warn!("catalog side-connection timed out");
                self.conn = None;
                false
            }
        }
    }

    async fn exchange(
        &mut self,
        ctx: &SessionCtx,
        request: &[u8],
        mut each: impl FnMut(u8, &[u8]),
    ) -> Result<(), String> {
        if self.conn.is_none() {
            let password = ctx
                .conn
                .password(&ctx.services.config.base_dir)
                .inspect_err(|_| self.unavailable = true)?;
            let tls = crate::target_tls::for_connection(&ctx.conn, &ctx.services.config.base_dir)
                .map_err(|e| {
                self.unavailable = true;
                e.to_string()
            })?;
            let t = crate::target::connect(&ctx.conn, tls.as_ref(), password.as_deref(), &[])
                .await
                .map_err(|e| {
                    self.unavailable = true;
                    e.to_string()
                })?;
            self.conn = Some((t.stream, t.leftover));
        }
        let Some((stream, buf)) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        stream.write_all(request).await.map_err(|e| e.to_string())?;
        loop {
            while let Some(f) = codec::next_frame(buf, MAX_MESSAGE).map_err(|e| e.to_string())? {
                if f.tag == be::READY {
                    return Ok(());
                }
                each(f.tag, f.body());
            }
            if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("the target closed the catalog connection".into());
            }
        }
    }
}

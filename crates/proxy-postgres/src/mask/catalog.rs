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

use super::deep::TypeInfo;
use super::views::ViewOrigin;
use crate::codec::{self, tags::backend as be};
use crate::ctx::SessionCtx;

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
    /// Types of result columns the built-in table does not know, and the types they are made
    /// of; `None` for one the lookup did not answer for.
    types: HashMap<u32, Option<TypeInfo>>,
}

/// A number in a catalog answer's text.
fn num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Key under which [`Catalog::resolve`] takes a type to look up rather than a column.
pub(crate) const TYPE_KEY: i16 = 0;

impl Catalog {
    /// The cached answer for a column: `None` if never asked, `Some(None)` if unresolved.
    pub fn origin(&self, key: (u32, i16)) -> Option<&Option<Origin>> {
        self.origins.get(&key)
    }

    /// The cached answer for a type: `None` if never asked, `Some(None)` if it could not be
    /// looked up.
    pub fn type_info(&self, type_oid: u32) -> Option<&Option<TypeInfo>> {
        self.types.get(&type_oid)
    }

    /// Every type looked up so far.
    pub fn types(&self) -> &HashMap<u32, Option<TypeInfo>> {
        &self.types
    }

    /// Ask about the columns (and, keyed `(type, TYPE_KEY)`, the types) not cached yet;
    /// afterwards every key has an answer (possibly unresolved).
    pub async fn resolve(&mut self, ctx: &SessionCtx, keys: &[(u32, i16)]) {
        let mut types: Vec<u32> = keys
            .iter()
            .filter(|k| k.1 == TYPE_KEY && k.0 != 0 && !self.types.contains_key(&k.0))
            .map(|k| k.0)
            .collect();
        types.sort_unstable();
        types.dedup();
        if !types.is_empty() {
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

    /// Describe the types in `wanted` and every type they are made of (elements, fields,
    /// domains' base types), for masking inside their values. A type the lookup does not
    /// answer for stays unknown (`None`): its values can't be looked into.
    async fn resolve_types(&mut self, ctx: &SessionCtx, wanted: &[u32]) {
        let mut list = String::new();
        for (i, oid) in wanted.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(list, "{sep}{oid}");
        }
        let sql = format!(
            "WITH RECURSIVE w(oid, depth) AS ( \
               SELECT o, 0 FROM pg_catalog.unnest('{{{list}}}'::pg_catalog.oid[]) AS o \
               UNION \
               SELECT s.x, w.depth + 1 FROM w \
               JOIN pg_catalog.pg_type y ON y.oid = w.oid \
               CROSS JOIN LATERAL ( \
                 SELECT y.typelem UNION ALL SELECT y.typbasetype \
                 UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = y.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
               ) s(x) \
               WHERE s.x <> 0 AND w.depth < 8 \
             ) \
             SELECT y.oid, y.typtype, y.typsend::pg_catalog.text, y.typelem, y.typbasetype, \
               y.typdelim, n.nspname, c.relname, c.relkind, a.attname, a.atttypid \
             FROM (SELECT DISTINCT oid FROM w) d \
             JOIN pg_catalog.pg_type y ON y.oid = d.oid \
             LEFT JOIN pg_catalog.pg_class c ON c.oid = y.typrelid \
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = y.typrelid \
               AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY y.oid, a.attnum"
        );
        let mut found: HashMap<u32, TypeInfo> = HashMap::new();
        let answered = self
            .ask(
                ctx,
                |out| codec::put_query(out, &sql),
                |tag, body| {
                    if tag == be::DATA_ROW
                        && let Ok(v) = codec::parse_data_row(body)
                        && let [
                            Some(oid),
                            Some(typtype),
                            Some(send),
                            Some(elem),
                            Some(base),
                            Some(delim),
                            ns,
                            rel,
                            relkind,
                            att,
                            atttype,
                        ] = v[..]
                        && let Some(oid) = num(oid)
                    {
                        let info = found.entry(oid).or_insert_with(|| {
                            let send = String::from_utf8_lossy(send);
                            let send = send.rsplit('.').next().unwrap_or_default();
                            TypeInfo {
                                typtype: typtype.first().copied().unwrap_or(b'b'),
                                send: send.trim_matches('"').into(),
                                elem: num(elem).unwrap_or(0),
                                base: num(base).unwrap_or(0),
                                delim: delim.first().copied().unwrap_or(b','),
                                row: None,
                                view: false,
                            }
                        });
                        if let (Some(ns), Some(rel)) = (ns, rel) {
                            info.view = matches!(relkind, Some(b"v" | b"m"));
                            let row = info.row.get_or_insert_with(|| {
                                let table = format!(
                                    "{}.{}",
                                    String::from_utf8_lossy(ns),
                                    String::from_utf8_lossy(rel)
                                );
                                (Arc::from(table), Vec::new())
                            });
                            if let (Some(att), Some(t)) = (att, atttype.and_then(num)) {
                                row.1
                                    .push((Arc::from(String::from_utf8_lossy(att).as_ref()), t));
                            }
                        }
                    }
                },
            )
            .await;
        if !answered {
            tracing::warn!("catalog lookup of result types failed: their values are masked");
        }
        if self.types.len() + found.len() + wanted.len() > MAX_CACHED {
            self.types.clear();
        }
        for t in wanted {
            let info = found.remove(t);
            self.types.insert(*t, info);
        }
        for (t, info) in found {
            self.types.insert(t, Some(info));
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

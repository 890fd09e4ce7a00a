//! What the gate decides for a client request, and what forwarding it does to the session's
//! prepared handles.
//!
//! A SQL batch is its statements. An RPC is each of its calls in turn, like the statements of
//! a batch (it runs only if every call is allowed): a call that carries a statement
//! (`sp_executesql`, `sp_prepare`, `sp_prepexec`, `sp_cursoropen`, `sp_cursorprepare`,
//! `sp_cursorprepexec`) is that statement; `sp_execute`/`sp_cursorexecute` is the statement
//! prepared under its handle, or `sql.unknown` for a handle the gateway did not see handed
//! out; a procedure by name is `sql.unknown` with its name in `functions`. A
//! transaction-manager request is the statement it amounts to.

use std::sync::Arc;

use gateway_core::action::{Action, SqlKind, SqlStatement};
use gateway_core::gate::Command;
use gateway_core::masking::SessionMasks;
use gateway_core::sql::{Dialect, LexOptions};

use crate::codec::packet::{self, Message};
use crate::codec::request::{SqlBatch, TransMgr};
use crate::codec::rpc::{ProcRef, Rpc, RpcRequest, SpecialProc};
use crate::ctx::SessionCtx;
use crate::prepared::{Handles, Pending, Prepared, Space, touches_handles};
use crate::results::Lineage;

/// A request as the gate sees it.
#[derive(Debug)]
pub(crate) struct Described {
    pub cmd: Command,
    pub lineage: Lineage,
    pub handles: HandleEffect,
}

/// What forwarding a request does to the session's prepared handles.
#[derive(Debug, Default)]
pub(crate) struct HandleEffect {
    /// The one preparing call whose handle the answer will carry.
    pub pending: Option<Pending>,
    /// The target may hand out or let go of handles the gateway cannot follow (a preparing
    /// call its answer cannot be matched to, a text naming a prepare procedure, an
    /// `sp_unprepare` of no readable handle): every handle is forgotten.
    pub clear: bool,
    /// Handles an `sp_unprepare` or `sp_cursorunprepare` lets go.
    pub drops: Vec<(Space, i64)>,
}

/// One call, or the whole of a batch: its text and statements.
struct Part {
    text: String,
    statements: Vec<Arc<SqlStatement>>,
}

/// What describing needs of the session.
pub(crate) struct Scope<'a> {
    /// The database the client is in (the connection's name).
    pub database: &'a str,
    pub masks: Option<&'a SessionMasks>,
    /// Classifies T-SQL text.
    pub classify: &'a dyn Fn(&str) -> Vec<Arc<SqlStatement>>,
}

/// What the gate decides for `m`, or why it cannot be decided (the client's error text).
pub(crate) fn describe(
    ctx: &SessionCtx,
    m: &Message,
    handles: &Handles,
) -> std::result::Result<Described, String> {
    let classify = |text: &str| {
        ctx.services
            .classifier
            .classify(
                text,
                LexOptions {
                    dialect: Dialect::TSql,
                    ..LexOptions::default()
                },
            )
            .to_vec()
    };
    let scope = Scope {
        database: &ctx.database,
        masks: ctx.masks.as_deref(),
        classify: &classify,
    };
    describe_in(&scope, m, handles)
}

/// [`describe`] with the session's parts given.
pub(crate) fn describe_in(
    ctx: &Scope<'_>,
    m: &Message,
    handles: &Handles,
) -> std::result::Result<Described, String> {
    let mut effect = HandleEffect::default();
    let parts: Vec<Part> = match m.ty {
        packet::SQL_BATCH => {
            let b = SqlBatch::parse(&m.payload)
                .map_err(|e| format!("portcullis: the batch cannot be read: {e}"))?;
            effect.clear = touches_handles(&b.text);
            if own_use(&b.text, ctx.database) {
                // Staying where it is: a session statement, answered by the gateway.
                vec![Part {
                    statements: vec![session("use ?")],
                    text: b.text,
                }]
            } else {
                let statements = (ctx.classify)(&b.text);
                vec![Part {
                    text: b.text,
                    statements,
                }]
            }
        }
        packet::RPC => {
            let req = RpcRequest::parse(&m.payload).map_err(|e| {
                format!("portcullis: the RPC cannot be read, so it is refused: {e}")
            })?;
            rpc_parts(ctx, &req, handles, &mut effect)
                .map_err(|e| format!("portcullis: the RPC cannot be read, so it is refused: {e}"))?
        }
        packet::TRANS_MGR => {
            let t = TransMgr::parse(&m.payload)
                .map_err(|e| format!("portcullis: the transaction request cannot be read: {e}"))?;
            let text = t.describe();
            let statements = (ctx.classify)(&text);
            vec![Part { text, statements }]
        }
        other => {
            return Err(format!(
                "portcullis: requests of type {other:#04x} are not supported through the gateway"
            ));
        }
    };
    let text = match parts.as_slice() {
        [only] => only.text.clone(),
        _ => parts
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join(";\n"),
    };
    let statements: Vec<Arc<SqlStatement>> = parts.into_iter().flat_map(|p| p.statements).collect();
    let lineage = match ctx.masks {
        Some(masks) => {
            let touched = masks.touched_rule(
                statements
                    .iter()
                    .flat_map(|s| s.tables.iter())
                    .map(String::as_str),
            );
            // A FOR XML/FOR JSON document over `*` holds every column of the rows it reads
            // without naming one: it is masked whole when it reads a covered table.
            let wildcard_document = statements.iter().any(|s| wildcard_document(&s.shape));
            Lineage {
                mentioned: masks
                    .mentioned_rule(&text)
                    .or(touched.filter(|_| wildcard_document)),
                touched,
                outputs: match statements.as_slice() {
                    [only] if !wildcard_document => only.outputs.clone(),
                    _ => None,
                },
            }
        }
        None => Lineage::default(),
    };
    let worst = SqlStatement::worst_kind(&statements);
    let tables = SqlStatement::tables_of(&statements);
    let mut cmd = Command::new(Action::Sql(unknown("", Vec::new())), text);
    cmd.actions = statements.into_iter().map(Action::Sql).collect();
    if cmd.actions.is_empty() {
        cmd.actions.push(Action::Sql(unknown("", Vec::new())));
    }
    cmd.action = worst.cedar_id().to_string();
    cmd.tables = tables;
    Ok(Described {
        cmd,
        lineage,
        handles: effect,
    })
}

/// Every call of an RPC request, in order, and what the request does to the handles.
fn rpc_parts(
    ctx: &Scope<'_>,
    req: &RpcRequest,
    handles: &Handles,
    effect: &mut HandleEffect,
) -> crate::codec::Result<Vec<Part>> {
    let mut parts = Vec::with_capacity(req.calls.len());
    let mut preparing: Vec<(usize, Space, Prepared)> = Vec::new();
    for (i, call) in req.calls.iter().enumerate() {
        let special = call.special()?;
        if let ProcRef::Name(name) = &call.proc
            && touches_handles(name)
        {
            effect.clear = true;
        }
        if let Some(stmt) = call.statement()? {
            effect.clear |= touches_handles(stmt);
            let statements = (ctx.classify)(stmt);
            let space = match special {
                Some(SpecialProc::Prepare | SpecialProc::PrepExec) => Some(Space::Statement),
                Some(SpecialProc::CursorPrepare | SpecialProc::CursorPrepExec) => {
                    Some(Space::Cursor)
                }
                _ => None,
            };
            if let Some(space) = space {
                let prepared = Prepared {
                    text: Arc::from(stmt),
                    statements: Arc::from(statements.clone()),
                };
                preparing.push((i, space, prepared));
            }
            parts.push(Part {
                text: stmt.to_string(),
                statements,
            });
            continue;
        }
        parts.push(match special {
            Some(sp @ (SpecialProc::Execute | SpecialProc::CursorExecute)) => {
                let space = if sp == SpecialProc::Execute {
                    Space::Statement
                } else {
                    Space::Cursor
                };
                execute(call, sp, handles.get_for(space, call))
            }
            Some(sp @ (SpecialProc::Unprepare | SpecialProc::CursorUnprepare)) => {
                let space = if sp == SpecialProc::Unprepare {
                    Space::Statement
                } else {
                    Space::Cursor
                };
                match call.handle() {
                    Some(h) => effect.drops.push((space, h)),
                    None => effect.clear = true,
                }
                Part {
                    text: format!("EXEC {}{}", sp.name(), handle_text(call)),
                    statements: vec![session(&format!("exec {} ?", sp.name()))],
                }
            }
            Some(sp) => Part {
                text: format!("EXEC {}", sp.name()),
                statements: vec![unknown(
                    &format!("exec {}", sp.name()),
                    vec![sp.name().to_string()],
                )],
            },
            None => {
                let name = match &call.proc {
                    ProcRef::Name(n) => n.to_lowercase(),
                    ProcRef::Id(id) => format!("<procedure {id}>"),
                };
                Part {
                    text: format!("EXEC {name}"),
                    statements: vec![unknown(&format!("exec {name}"), vec![name])],
                }
            }
        });
    }
    // The answer names a handle only by the ordinal of the parameter it fills: it can be
    // matched to its call only when one call of the request has an OUTPUT first parameter.
    let outputs = req
        .calls
        .iter()
        .filter(|c| c.first_param_is_output())
        .count();
    match preparing.as_mut_slice() {
        [] => {}
        [(i, space, prepared)]
            if outputs == 1 && req.calls.get(*i).is_some_and(Rpc::first_param_is_output) =>
        {
            effect.pending = Some(Pending {
                space: *space,
                prepared: prepared.clone(),
            });
        }
        _ => effect.clear = true,
    }
    Ok(parts)
}

/// Why an execute of a handle the gateway did not see handed out is refused.
pub(crate) const UNKNOWN_HANDLE: &str = "this prepared-statement handle was not handed out \
    through the gateway in this session (or was let go), so what it would run is unknown; \
    prepare the statement again";

/// `sp_execute` / `sp_cursorexecute`: the statement its handle was prepared with; for a
/// handle not seen handed out, a statement refused whatever policy says.
fn execute(call: &Rpc, sp: SpecialProc, prepared: Option<&Prepared>) -> Part {
    match prepared {
        Some(p) => Part {
            text: p.text.to_string(),
            statements: p.statements.to_vec(),
        },
        None => {
            let mut s = (*unknown(
                &format!(
                    "<{} of a handle not prepared through the gateway>",
                    sp.name()
                ),
                Vec::new(),
            ))
            .clone();
            // Whatever policy says: nothing is known of what the handle would run.
            s.refusal = Some(UNKNOWN_HANDLE);
            Part {
                text: format!("EXEC {}{}", sp.name(), handle_text(call)),
                statements: vec![Arc::new(s)],
            }
        }
    }
}

/// ` <handle>` for the audit text of a call that names one.
fn handle_text(call: &Rpc) -> String {
    call.handle().map(|h| format!(" {h}")).unwrap_or_default()
}

impl Handles {
    /// The statement prepared under the handle `call` names.
    fn get_for(&self, space: Space, call: &Rpc) -> Option<&Prepared> {
        self.get(space, call.handle()?)
    }
}

/// Whether `text` is `USE <database>` of `database` (bare, bracketed or quoted).
pub(crate) fn own_use(text: &str, database: &str) -> bool {
    let t = text.trim().trim_end_matches(';').trim_end();
    let Some((word, rest)) = t.split_once(char::is_whitespace) else {
        return false;
    };
    if !word.eq_ignore_ascii_case("use") {
        return false;
    }
    let name = rest.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .or_else(|| name.strip_prefix('"').and_then(|n| n.strip_suffix('"')))
        .unwrap_or(name);
    name.eq_ignore_ascii_case(database)
}

/// A statement that only touches the session (a `USE` of its own database, letting go of a
/// prepared handle).
fn session(shape: &str) -> Arc<SqlStatement> {
    let mut s = (*unknown(shape, Vec::new())).clone();
    s.kind = SqlKind::Session;
    s.parsed = true;
    Arc::new(s)
}

/// A statement the gateway cannot analyse (a procedure called by name: policy can name it
/// in `functions`).
fn unknown(shape: &str, functions: Vec<String>) -> Arc<SqlStatement> {
    Arc::new(SqlStatement {
        kind: SqlKind::Unknown,
        tables: Vec::new(),
        unbounded: false,
        shape: shape.to_string(),
        functions,
        parsed: false,
        refusal: None,
        outputs: None,
    })
}

#[cfg(test)]
#[path = "describe_tests.rs"]
mod tests;

/// Whether a statement (by its shape, literals already replaced) builds a `FOR XML` or
/// `FOR JSON` document and selects `*` somewhere.
fn wildcard_document(shape: &str) -> bool {
    let words: Vec<&str> = shape.split_whitespace().collect();
    let document = words.windows(2).any(|w| {
        w[0].eq_ignore_ascii_case("for")
            && (w[1].eq_ignore_ascii_case("xml") || w[1].eq_ignore_ascii_case("json"))
    });
    document && shape.contains('*')
}

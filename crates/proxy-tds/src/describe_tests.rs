//! How requests are described to the gate, and what they do to the session's handles.

use std::sync::Arc;

use bytes::Bytes;
use gateway_core::action::{Action, SqlKind, SqlStatement};
use gateway_core::sql::{Dialect, LexOptions, classify_uncached};

use super::{Described, Scope, UNKNOWN_HANDLE, describe_in, own_use};
use crate::codec::packet::{self, Message, STATUS_EOM};
use crate::codec::rpc::{BATCH_FLAG, param_status};
use crate::codec::rpc_types::ty;
use crate::prepared::{Handles, Prepared, Space};

const TXN_HEADERS: [u8; 22] = [
    0x16, 0, 0, 0, 0x12, 0, 0, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0,
];
const LATIN1: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn b_varchar(s: &str) -> Vec<u8> {
    let mut v = vec![u8::try_from(s.encode_utf16().count()).unwrap()];
    v.extend(utf16(s));
    v
}

fn by_id(id: u16) -> Vec<u8> {
    let mut v = vec![0xFF, 0xFF];
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

fn by_name(name: &str) -> Vec<u8> {
    let mut v = u16::try_from(name.encode_utf16().count())
        .unwrap()
        .to_le_bytes()
        .to_vec();
    v.extend(utf16(name));
    v.extend_from_slice(&[0, 0]);
    v
}

fn nvarchar(value: &str) -> Vec<u8> {
    let mut v = b_varchar("");
    v.push(0);
    v.extend_from_slice(&[ty::NVARCHAR, 0x40, 0x1F]);
    v.extend_from_slice(&LATIN1);
    let data = utf16(value);
    v.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
    v.extend(data);
    v
}

fn int(status: u8, value: i32) -> Vec<u8> {
    let mut v = b_varchar("");
    v.extend_from_slice(&[status, ty::INTN, 4, 4]);
    v.extend_from_slice(&value.to_le_bytes());
    v
}

/// An OUTPUT handle parameter, NULL on the way in.
fn handle_out() -> Vec<u8> {
    let mut v = b_varchar("@handle");
    v.extend_from_slice(&[param_status::BY_REF, ty::INTN, 4, 0]);
    v
}

fn rpc(calls: &[Vec<u8>]) -> Message {
    let mut v = TXN_HEADERS.to_vec();
    for (i, c) in calls.iter().enumerate() {
        if i > 0 {
            v.push(BATCH_FLAG);
        }
        v.extend_from_slice(c);
    }
    Message {
        ty: packet::RPC,
        status: STATUS_EOM,
        last_status: STATUS_EOM,
        payload: Bytes::from(v),
    }
}

fn batch(text: &str) -> Message {
    let mut v = TXN_HEADERS.to_vec();
    v.extend(utf16(text));
    Message {
        ty: packet::SQL_BATCH,
        status: STATUS_EOM,
        last_status: STATUS_EOM,
        payload: Bytes::from(v),
    }
}

fn executesql(stmt: &str) -> Vec<u8> {
    [by_id(10), nvarchar(stmt)].concat()
}

fn prepare(stmt: &str) -> Vec<u8> {
    [
        by_id(11),
        handle_out(),
        nvarchar(""),
        nvarchar(stmt),
        int(0, 1),
    ]
    .concat()
}

fn classify(text: &str) -> Vec<Arc<SqlStatement>> {
    let opts = LexOptions {
        dialect: Dialect::TSql,
        ..LexOptions::default()
    };
    classify_uncached(text, opts)
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn describe(m: &Message, handles: &Handles) -> Result<Described, String> {
    let scope = Scope {
        database: "sales",
        masks: None,
        classify: &classify,
    };
    describe_in(&scope, m, handles)
}

fn kinds(d: &Described) -> Vec<SqlKind> {
    d.cmd
        .actions
        .iter()
        .map(|a| match a {
            Action::Sql(s) => s.kind,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn prepared(text: &str) -> Prepared {
    Prepared {
        text: Arc::from(text),
        statements: Arc::from(classify(text)),
    }
}

#[test]
fn a_batched_rpc_is_decided_call_by_call_and_runs_only_as_its_worst() {
    let h = Handles::new();
    let m = rpc(&[
        executesql("select name from customers where id = @p1"),
        executesql("delete from orders where id = 1"),
    ]);
    let d = describe(&m, &h).unwrap();
    assert_eq!(kinds(&d), vec![SqlKind::Read, SqlKind::Write]);
    assert_eq!(d.cmd.action, "sql.write");
    assert_eq!(
        d.cmd.text,
        "select name from customers where id = @p1;\ndelete from orders where id = 1"
    );
    assert_eq!(d.cmd.tables, vec!["customers", "orders"]);
    // A procedure by name behind a read: the whole request is as unknown as its worst call.
    let m = rpc(&[
        executesql("select 1"),
        [by_name("dbo.Purge"), int(0, 1)].concat(),
    ]);
    let d = describe(&m, &h).unwrap();
    assert_eq!(d.cmd.action, "sql.unknown");
    match &d.cmd.actions[1] {
        Action::Sql(s) => assert_eq!(s.functions, vec!["dbo.purge"]),
        other => panic!("{other:?}"),
    }
    // One unreadable call refuses the whole request.
    let m = rpc(&[executesql("select 1"), by_id(99)]);
    assert!(describe(&m, &h).unwrap_err().contains("cannot be read"));
}

#[test]
fn qualified_special_procedures_are_read_and_other_databases_refused() {
    let h = Handles::new();
    let m = rpc(&[[by_name("sys.sp_executesql"), nvarchar("drop table t")].concat()]);
    let d = describe(&m, &h).unwrap();
    assert_eq!(d.cmd.action, "sql.ddl");
    assert_eq!(d.cmd.text, "drop table t");
    for name in [
        "otherdb..sp_executesql",
        "evil.sp_executesql",
        "srv.db.sys.sp_prepexec",
    ] {
        let m = rpc(&[[by_name(name), nvarchar("select 1")].concat()]);
        assert!(describe(&m, &h).is_err(), "{name}");
    }
    // sp_cursoropen carries its statement second.
    let m = rpc(&[[by_id(2), handle_out(), nvarchar("update t set a = 1")].concat()]);
    assert_eq!(describe(&m, &h).unwrap().cmd.action, "sql.write");
}

#[test]
fn a_prepare_awaits_its_handle_only_when_the_answer_can_name_it() {
    let h = Handles::new();
    let d = describe(&rpc(&[prepare("select * from orders")]), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.read");
    let p = d.handles.pending.expect("awaits its handle");
    assert_eq!(
        (p.space, &*p.prepared.text),
        (Space::Statement, "select * from orders")
    );
    assert!(!d.handles.clear);
    // sp_cursorprepexec: the handle, then the cursor, then the parameters, then the statement.
    let call = [
        by_id(5),
        handle_out(),
        handle_out(),
        nvarchar(""),
        nvarchar("select 1"),
    ]
    .concat();
    let d = describe(&rpc(&[call]), &h).unwrap();
    assert_eq!(d.handles.pending.map(|p| p.space), Some(Space::Cursor));
    // Two preparing calls, or another call whose first parameter is OUTPUT: the answer's
    // handles cannot be told apart, so none is taken and the known ones are forgotten.
    for calls in [
        vec![prepare("select 1"), prepare("delete from t")],
        vec![
            prepare("select 1"),
            [by_name("dbo.next_id"), handle_out()].concat(),
        ],
        vec![[by_id(11), int(0, 0), nvarchar(""), nvarchar("select 1")].concat()],
    ] {
        let d = describe(&rpc(&calls), &h).unwrap();
        assert!(d.handles.pending.is_none() && d.handles.clear);
    }
}

#[test]
fn an_execute_is_its_prepared_statement_and_an_unknown_handle_is_refused() {
    let mut h = Handles::new();
    h.insert(
        Space::Statement,
        7,
        prepared("delete from orders where id = @p1"),
    );
    h.insert(Space::Cursor, 8, prepared("select * from customers"));
    let d = describe(&rpc(&[[by_id(12), int(0, 7), int(0, 1)].concat()]), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.write");
    assert_eq!(d.cmd.text, "delete from orders where id = @p1");
    assert_eq!(d.cmd.tables, vec!["orders"]);
    // By name too.
    let d = describe(&rpc(&[[by_name("sp_execute"), int(0, 7)].concat()]), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.write");
    for call in [
        [by_id(12), int(0, 9)].concat(),
        // A cursor handle is not a statement handle.
        [by_id(12), int(0, 8)].concat(),
        // A handle that is not an integer is not converted.
        [by_id(12), nvarchar("7")].concat(),
        by_id(12),
    ] {
        let d = describe(&rpc(&[call]), &h).unwrap();
        assert_eq!(d.cmd.action, "sql.unknown", "{}", d.cmd.text);
        match &d.cmd.actions[0] {
            Action::Sql(s) => {
                assert!(s.functions.is_empty(), "not allowed by name");
                assert_eq!(
                    s.refusal,
                    Some(UNKNOWN_HANDLE),
                    "refused whatever policy says"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    let d = describe(&rpc(&[[by_id(4), int(0, 8), handle_out()].concat()]), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.read");
}

#[test]
fn unprepares_resets_and_prepare_procedures_in_text_let_handles_go() {
    let h = Handles::new();
    let d = describe(&rpc(&[[by_id(15), int(0, 7)].concat()]), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.session");
    assert_eq!(d.cmd.text, "EXEC sp_unprepare 7");
    assert_eq!(d.handles.drops, vec![(Space::Statement, 7)]);
    assert!(!d.handles.clear);
    let d = describe(&rpc(&[[by_id(6), int(0, 3)].concat()]), &h).unwrap();
    assert_eq!(d.handles.drops, vec![(Space::Cursor, 3)]);
    let d = describe(&rpc(&[[by_id(15), nvarchar("7")].concat()]), &h).unwrap();
    assert!(d.handles.clear);
    for text in [
        "exec sp_unprepare 7",
        "declare @h int; exec sp_prepare @h output, null, N'delete from t'",
    ] {
        assert!(describe(&batch(text), &h).unwrap().handles.clear, "{text}");
    }
    assert!(!describe(&batch("select 1"), &h).unwrap().handles.clear);
    let d = describe(&rpc(&[executesql("exec sp_unprepare 7")]), &h).unwrap();
    assert!(d.handles.clear);
}

#[test]
fn other_system_procedures_are_unknown_and_named() {
    let h = Handles::new();
    let d = describe(&rpc(&[[by_id(7), int(0, 1)].concat()]), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.unknown");
    assert_eq!(d.cmd.text, "EXEC sp_cursorfetch");
    match &d.cmd.actions[0] {
        Action::Sql(s) => assert_eq!(s.functions, vec!["sp_cursorfetch"]),
        other => panic!("{other:?}"),
    }
    // sp_prepexecrpc is not unwrapped: refused.
    assert!(describe(&rpc(&[by_id(14)]), &h).is_err());
}

#[test]
fn batches_and_transaction_requests_are_described_as_before() {
    let h = Handles::new();
    let d = describe(&batch("USE [sales]"), &h).unwrap();
    assert_eq!(d.cmd.action, "sql.session");
    let d = describe(&batch("select 1; drop table t"), &h).unwrap();
    assert_eq!(kinds(&d), vec![SqlKind::Read, SqlKind::Ddl]);
    let mut tm = TXN_HEADERS.to_vec();
    tm.extend_from_slice(&7u16.to_le_bytes());
    tm.extend_from_slice(&[0, 0x01, 0, 0]);
    let m = Message {
        ty: packet::TRANS_MGR,
        status: STATUS_EOM,
        last_status: STATUS_EOM,
        payload: Bytes::from(tm),
    };
    let d = describe(&m, &h).unwrap();
    assert_eq!(d.cmd.text, "COMMIT TRANSACTION; BEGIN TRANSACTION");
    assert_eq!(d.cmd.action, "sql.session");
    let m = Message {
        ty: packet::BULK_LOAD,
        status: STATUS_EOM,
        last_status: STATUS_EOM,
        payload: Bytes::new(),
    };
    assert!(describe(&m, &h).is_err());
}

#[test]
fn only_a_use_of_the_clients_own_database_is_its_own() {
    assert!(own_use("USE sales", "sales"));
    assert!(own_use(" use [Sales];", "sales"));
    assert!(own_use("USE \"sales\"", "sales"));
    assert!(!own_use("USE master", "sales"));
    assert!(!own_use("USE sales; DROP TABLE t", "sales"));
    assert!(!own_use("select 1", "sales"));
}

use super::*;
use crate::codec::rpc_types::ty;

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
    v.extend_from_slice(&[0, 0]); // OptionFlags
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

fn nvarchar(name: &str, value: &str) -> Vec<u8> {
    let mut v = b_varchar(name);
    v.push(0); // status
    v.extend_from_slice(&[ty::NVARCHAR, 0x40, 0x1F]);
    v.extend_from_slice(&LATIN1);
    let data = utf16(value);
    v.extend_from_slice(&u16::try_from(data.len()).unwrap().to_le_bytes());
    v.extend(data);
    v
}

fn int_param(name: &str, status: u8, value: i32) -> Vec<u8> {
    let mut v = b_varchar(name);
    v.extend_from_slice(&[status, ty::INTN, 4, 4]);
    v.extend_from_slice(&value.to_le_bytes());
    v
}

fn request(calls: &[Vec<u8>]) -> Bytes {
    let mut v = TXN_HEADERS.to_vec();
    v.extend(calls.concat());
    Bytes::from(v)
}

fn executesql(stmt: &str) -> Vec<u8> {
    [
        by_id(10),
        nvarchar("", stmt),
        nvarchar("", "@P1 int"),
        int_param("@P1", 0, 7),
    ]
    .concat()
}

#[test]
fn sp_executesql_by_proc_id() {
    let r = RpcRequest::parse(&request(&[executesql("select * from t where id = @P1")])).unwrap();
    assert_eq!(r.headers, AllHeaders::with_transaction(0, 1));
    assert_eq!(r.calls.len(), 1);
    let c = &r.calls[0];
    assert_eq!(c.proc, ProcRef::Id(10));
    assert_eq!(c.special().unwrap(), Some(SpecialProc::ExecuteSql));
    assert_eq!(
        c.statement().unwrap(),
        Some("select * from t where id = @P1")
    );
    assert_eq!(c.procedure_name().unwrap(), None);
    assert_eq!(c.params.len(), 3);
    assert_eq!(c.params[2].name, "@P1");
    assert_eq!(c.params[2].type_code(), ty::INTN);
    assert_eq!(c.params[2].value, ParamValue::Int(7));
}

#[test]
fn sp_prepare_statement_is_third_not_first_nvarchar() {
    let call = [
        by_id(11),
        int_param("@handle", param_status::BY_REF, 0),
        nvarchar("@params", "@P1 int"),
        nvarchar("@stmt", "delete from t where id = @P1"),
        int_param("@options", 0, 1),
    ]
    .concat();
    let r = RpcRequest::parse(&request(&[call])).unwrap();
    assert_eq!(
        r.calls[0].statement().unwrap(),
        Some("delete from t where id = @P1")
    );
}

#[test]
fn statement_positions_of_every_sql_carrying_proc() {
    for (id, idx) in [(10u16, 0usize), (2, 1), (3, 2), (5, 3), (11, 2), (13, 2)] {
        let mut call = by_id(id);
        for i in 0..4 {
            if i == idx {
                call.extend(nvarchar("", "select 42"));
            } else {
                call.extend(int_param("", 0, 0));
            }
        }
        let r = RpcRequest::parse(&request(&[call])).unwrap();
        assert_eq!(
            r.calls[0].statement().unwrap(),
            Some("select 42"),
            "proc {id}"
        );
        assert_eq!(SpecialProc::from_id(id).unwrap().id(), id);
    }
}

#[test]
fn named_procedure() {
    let call = [by_name("dbo.GetUser"), int_param("@id", 0, 3)].concat();
    let r = RpcRequest::parse(&request(&[call])).unwrap();
    let c = &r.calls[0];
    assert_eq!(c.proc, ProcRef::Name("dbo.GetUser".into()));
    assert_eq!(c.special().unwrap(), None);
    assert_eq!(c.statement().unwrap(), None);
    assert_eq!(c.procedure_name().unwrap(), Some("dbo.GetUser"));
}

#[test]
fn sp_executesql_by_name_is_special() {
    for name in [
        "sp_executesql",
        "SP_EXECUTESQL",
        "sys.sp_executesql",
        "..sp_executesql",
        "[sp_executesql ]",
        "[sys].[sp_executesql]",
        "\"sp_executesql\"",
        " sp_executesql ",
        "dbo.sp_executesql;1",
    ] {
        let call = [by_name(name), nvarchar("@statement", "select 1")].concat();
        let r = RpcRequest::parse(&request(&[call])).unwrap();
        let c = &r.calls[0];
        assert_eq!(
            c.special().unwrap(),
            Some(SpecialProc::ExecuteSql),
            "{name}"
        );
        assert_eq!(c.statement().unwrap(), Some("select 1"), "{name}");
        assert_eq!(c.procedure_name().unwrap(), None, "{name}");
    }
}

#[test]
fn special_name_qualified_unusually_refused() {
    for name in [
        "evil.sp_executesql",
        "srv.db.sys.sp_executesql",
        "[x].sp_prepexec",
        "master..sp_executesql",
        "otherdb.sys.sp_executesql",
        "[sales].dbo.sp_prepare",
    ] {
        let call = [by_name(name), nvarchar("", "select 1")].concat();
        let r = RpcRequest::parse(&request(&[call])).unwrap();
        assert!(r.calls[0].special().is_err(), "{name}");
        assert!(r.calls[0].statement().is_err(), "{name}");
        assert!(r.calls[0].procedure_name().is_err(), "{name}");
    }
}

#[test]
fn batched_calls_are_all_parsed() {
    let mut second = by_name("dbo.DropEverything");
    second.extend(int_param("", 0, 1));
    let bytes = request(&[executesql("select 1"), vec![BATCH_FLAG], second.clone()]);
    let r = RpcRequest::parse(&bytes).unwrap();
    assert_eq!(r.calls.len(), 2);
    assert_eq!(
        r.calls[1].procedure_name().unwrap(),
        Some("dbo.DropEverything")
    );
    // A trailing batch flag is allowed.
    let bytes = request(&[
        executesql("select 1"),
        vec![BATCH_FLAG],
        second,
        vec![BATCH_FLAG],
    ]);
    assert_eq!(RpcRequest::parse(&bytes).unwrap().calls.len(), 2);
    // A call without parameters, then another.
    let bytes = request(&[by_id(15), vec![BATCH_FLAG], by_id(9)]);
    let r = RpcRequest::parse(&bytes).unwrap();
    assert_eq!(r.calls.len(), 2);
    assert!(r.calls[0].params.is_empty());
}

#[test]
fn no_exec_flag_refused() {
    let bytes = request(&[executesql("select 1"), vec![NO_EXEC_FLAG], by_id(9)]);
    assert!(
        matches!(RpcRequest::parse(&bytes), Err(CodecError::Invalid(m)) if m.contains("NoExec"))
    );
}

#[test]
fn encrypted_parameter_refused() {
    let call = [by_name("p"), int_param("@x", param_status::ENCRYPTED, 1)].concat();
    assert!(matches!(
        RpcRequest::parse(&request(&[call])),
        Err(CodecError::Invalid(m)) if m.contains("encrypted")
    ));
}

#[test]
fn unsupported_parameter_type_refuses_the_request() {
    let mut call = by_name("p");
    call.extend(b_varchar("@t"));
    call.extend_from_slice(&[0, 0xF3, 0, 0]); // TVP
    assert!(matches!(
        RpcRequest::parse(&request(&[call])),
        Err(CodecError::Invalid(m)) if m.contains("TVP")
    ));
}

#[test]
fn statement_errors() {
    // Unknown ProcID.
    let r = RpcRequest::parse(&request(&[by_id(99)])).unwrap();
    assert!(r.calls[0].special().is_err());
    // sp_executesql without parameters.
    let r = RpcRequest::parse(&request(&[by_id(10)])).unwrap();
    assert!(r.calls[0].statement().is_err());
    // NULL statement.
    let mut call = by_id(10);
    call.extend(b_varchar(""));
    call.extend_from_slice(&[0, ty::NVARCHAR, 0x40, 0x1F]);
    call.extend_from_slice(&LATIN1);
    call.extend_from_slice(&[0xFF, 0xFF]);
    let r = RpcRequest::parse(&request(&[call])).unwrap();
    assert!(r.calls[0].statement().is_err());
    // Statement as an int.
    let r = RpcRequest::parse(&request(&[[by_id(10), int_param("", 0, 1)].concat()])).unwrap();
    assert!(r.calls[0].statement().is_err());
    // Statement with a lone surrogate: parsed as raw bytes, refused as a statement.
    let mut call = by_id(10);
    call.extend(b_varchar(""));
    call.extend_from_slice(&[0, ty::NVARCHAR, 0x40, 0x1F]);
    call.extend_from_slice(&LATIN1);
    call.extend_from_slice(&[2, 0, 0x00, 0xD8]);
    let r = RpcRequest::parse(&request(&[call])).unwrap();
    assert!(r.calls[0].statement().is_err());
    // sp_prepexecrpc is not unwrapped.
    let r = RpcRequest::parse(&request(&[by_id(14)])).unwrap();
    assert!(r.calls[0].statement().is_err());
    // sp_execute runs a prepared handle: no statement here.
    let r = RpcRequest::parse(&request(&[[by_id(12), int_param("", 0, 1)].concat()])).unwrap();
    assert_eq!(r.calls[0].statement().unwrap(), None);
    assert_eq!(r.calls[0].special().unwrap(), Some(SpecialProc::Execute));
}

#[test]
fn malformed_requests_refused() {
    // No call at all.
    assert!(RpcRequest::parse(&request(&[])).is_err());
    // Empty procedure name.
    assert!(RpcRequest::parse(&request(&[by_name("")])).is_err());
    // Procedure name past the end.
    assert!(RpcRequest::parse(&request(&[vec![0x10, 0x00, b'a', 0]])).is_err());
    // Procedure name over the bound.
    assert!(matches!(
        RpcRequest::parse(&request(&[vec![0x00, 0x10]])),
        Err(CodecError::TooLong { .. })
    ));
    // Procedure name with a lone surrogate.
    assert!(RpcRequest::parse(&request(&[vec![1, 0, 0x00, 0xD8, 0, 0]])).is_err());
    // Missing OptionFlags.
    assert!(RpcRequest::parse(&request(&[vec![0xFF, 0xFF, 10, 0]])).is_err());
    // Trailing junk after a complete call.
    assert!(RpcRequest::parse(&request(&[executesql("select 1"), vec![0x00]])).is_err());
    // Truncated parameter value.
    let mut call = executesql("select 1");
    call.pop();
    assert!(RpcRequest::parse(&request(&[call])).is_err());
}

#[test]
fn too_many_parameters_refused() {
    let mut call = by_name("p");
    for _ in 0..=MAX_PARAMS {
        call.extend_from_slice(&[0, 0, ty::INT1, 1]);
    }
    assert!(matches!(
        RpcRequest::parse(&request(&[call])),
        Err(CodecError::TooLong {
            what: "RPC parameters",
            ..
        })
    ));
}

#[test]
fn multipart_names() {
    let ok = |s: &str| split_multipart_name(s).unwrap();
    assert_eq!(ok("proc"), ["proc"]);
    assert_eq!(ok("dbo.proc"), ["dbo", "proc"]);
    assert_eq!(ok("[a.b].c"), ["a.b", "c"]);
    assert_eq!(ok("[a]]b]"), ["a]b"]);
    assert_eq!(ok("\"a\"\"b\".c"), ["a\"b", "c"]);
    assert_eq!(ok("db..proc"), ["db", "", "proc"]);
    assert_eq!(ok(" [x] . y "), ["x", "y"]);
    assert_eq!(ok("s.d.o.p"), ["s", "d", "o", "p"]);
    for bad in ["[abc", "a.b.c.d.e", "[a]x", "a]b", "a[b", "\"a"] {
        assert!(split_multipart_name(bad).is_err(), "{bad}");
    }
}

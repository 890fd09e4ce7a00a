use super::*;

/// ALL_HEADERS as drivers send it: TotalLength 22, one transaction descriptor header (18).
const TXN_HEADERS: [u8; 22] = [
    0x16, 0, 0, 0, // TotalLength
    0x12, 0, 0, 0, // HeaderLength
    0x02, 0, // transaction descriptor
    0, 0, 0, 0, 0, 0, 0, 0, // descriptor: none
    0x01, 0, 0, 0, // one outstanding request
];

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn batch(text: &str) -> Vec<u8> {
    let mut v = TXN_HEADERS.to_vec();
    v.extend(utf16(text));
    v
}

#[test]
fn parses_sql_batch() {
    let b = SqlBatch::parse(&batch("select 1; drop table t")).unwrap();
    assert_eq!(b.text, "select 1; drop table t");
    assert_eq!(b.headers, AllHeaders::with_transaction(0, 1));
}

#[test]
fn sql_batch_round_trips_byte_for_byte() {
    let bytes = batch("SELECT N'☃' -- é");
    assert_eq!(
        &SqlBatch::parse(&bytes).unwrap().encode().unwrap()[..],
        &bytes[..]
    );
}

#[test]
fn sql_batch_with_invalid_utf16_refused() {
    let mut bytes = TXN_HEADERS.to_vec();
    bytes.extend_from_slice(&[b's', 0, 0x00, 0xDC, b'x', 0]); // lone low surrogate
    assert!(matches!(
        SqlBatch::parse(&bytes),
        Err(CodecError::Invalid(_))
    ));
    let mut odd = batch("select 1");
    odd.push(0);
    assert!(SqlBatch::parse(&odd).is_err());
}

#[test]
fn batch_without_all_headers_refused() {
    // A TDS 7.1 style batch: text straight away. "se" reads as TotalLength 0x00650073.
    assert!(matches!(
        SqlBatch::parse(&utf16("select 1")),
        Err(CodecError::TooLong {
            what: "ALL_HEADERS",
            ..
        })
    ));
}

#[test]
fn all_three_headers_round_trip() {
    let h = AllHeaders {
        query_notification: Some(QueryNotification {
            notify_id: "nid".into(),
            ssb_deployment: "service=svc".into(),
            timeout: Some(600),
        }),
        transaction: Some(TransactionDescriptor {
            descriptor: 0x0102_0304_0506_0708,
            outstanding_requests: 1,
        }),
        trace_activity: Some([9; 20]),
    };
    let mut out = BytesMut::new();
    h.encode(&mut out).unwrap();
    let total = u32::from_le_bytes(out[..4].try_into().unwrap()) as usize;
    assert_eq!(total, out.len());
    let mut cur = Cursor::new(&out);
    assert_eq!(AllHeaders::parse(&mut cur).unwrap(), h);
    assert!(cur.is_empty());
}

#[test]
fn query_notification_without_timeout() {
    let mut d = vec![];
    d.extend_from_slice(&2u16.to_le_bytes());
    d.extend(utf16("a"));
    d.extend_from_slice(&0u16.to_le_bytes());
    let mut bytes = ((4 + 6 + d.len()) as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&((6 + d.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend(d);
    let h = AllHeaders::parse(&mut Cursor::new(&bytes)).unwrap();
    let qn = h.query_notification.unwrap();
    assert_eq!((qn.notify_id.as_str(), qn.timeout), ("a", None));
}

#[test]
fn malformed_all_headers_refused() {
    let parse = |b: &[u8]| AllHeaders::parse(&mut Cursor::new(b));
    // TotalLength below 4.
    assert!(parse(&[3, 0, 0, 0]).is_err());
    // TotalLength past the payload.
    assert_eq!(
        parse(&[0x20, 0, 0, 0, 0]),
        Err(CodecError::Truncated("ALL_HEADERS"))
    );
    // Header length below 6.
    assert!(parse(&[10, 0, 0, 0, 5, 0, 0, 0, 2, 0]).is_err());
    // Header length past TotalLength.
    let mut b = TXN_HEADERS;
    b[4] = 0x13;
    assert!(parse(&b).is_err());
    // Descriptor header with extra bytes.
    let mut b = TXN_HEADERS.to_vec();
    b[0] = 23;
    b[4] = 19;
    b.push(0);
    assert!(matches!(parse(&b), Err(CodecError::Invalid(m)) if m.contains("extra")));
    // Unknown header type.
    let mut b = TXN_HEADERS;
    b[8] = 7;
    assert!(matches!(parse(&b), Err(CodecError::Invalid(m)) if m.contains("unknown")));
    // Two descriptors.
    let mut b = vec![40, 0, 0, 0];
    b.extend_from_slice(&TXN_HEADERS[4..]);
    b.extend_from_slice(&TXN_HEADERS[4..]);
    assert!(matches!(parse(&b), Err(CodecError::Invalid(m)) if m.contains("two")));
    // Over the bound.
    assert!(matches!(
        parse(&[0xFF, 0xFF, 0, 0]),
        Err(CodecError::TooLong { .. })
    ));
}

fn tm(request: u16, body: &[u8]) -> Bytes {
    let mut v = TXN_HEADERS.to_vec();
    v.extend_from_slice(&request.to_le_bytes());
    v.extend_from_slice(body);
    Bytes::from(v)
}

fn xname(s: &str) -> Vec<u8> {
    let b = utf16(s);
    let mut v = vec![u8::try_from(b.len()).unwrap()];
    v.extend(b);
    v
}

#[test]
fn transaction_manager_begin() {
    let mut body = vec![2]; // read committed
    body.extend(xname("t1"));
    let t = TransMgr::parse(&tm(tm::BEGIN_XACT, &body)).unwrap();
    assert_eq!(t.request, tm::BEGIN_XACT);
    assert_eq!(t.isolation_level, Some(2));
    assert_eq!(t.name.as_deref(), Some("t1"));
    assert_eq!(t.encode().unwrap(), tm(tm::BEGIN_XACT, &body));
}

#[test]
fn transaction_manager_commit_and_rollback_with_begin_after() {
    for req in [tm::COMMIT_XACT, tm::ROLLBACK_XACT] {
        let mut body = xname("");
        body.push(0x01);
        body.push(5);
        body.extend(xname("next"));
        let t = TransMgr::parse(&tm(req, &body)).unwrap();
        assert_eq!(t.name.as_deref(), Some(""));
        assert_eq!(
            t.begin_after,
            Some(BeginXact {
                isolation_level: 5,
                name: "next".into()
            })
        );
        assert_eq!(t.encode().unwrap(), tm(req, &body));

        let mut plain = xname("t1");
        plain.push(0);
        let t = TransMgr::parse(&tm(req, &plain)).unwrap();
        assert_eq!(t.begin_after, None);
        assert_eq!(t.encode().unwrap(), tm(req, &plain));
    }
}

#[test]
fn transaction_manager_save_promote_and_dtc() {
    let t = TransMgr::parse(&tm(tm::SAVE_XACT, &xname("sp1"))).unwrap();
    assert_eq!(t.name.as_deref(), Some("sp1"));
    let t = TransMgr::parse(&tm(tm::PROMOTE_XACT, &[])).unwrap();
    assert_eq!(t.name, None);
    assert_eq!(t.encode().unwrap(), tm(tm::PROMOTE_XACT, &[]));
    let t = TransMgr::parse(&tm(tm::GET_DTC_ADDRESS, &[0, 0])).unwrap();
    assert_eq!(t.dtc_data.as_deref(), Some(&[][..]));
    let t = TransMgr::parse(&tm(tm::PROPAGATE_XACT, &[3, 0, 1, 2, 3])).unwrap();
    assert_eq!(t.dtc_data.as_deref(), Some(&[1, 2, 3][..]));
    assert_eq!(
        t.encode().unwrap(),
        tm(tm::PROPAGATE_XACT, &[3, 0, 1, 2, 3])
    );
}

#[test]
fn transaction_manager_malformed_refused() {
    // Unknown request type.
    assert!(TransMgr::parse(&tm(4, &[])).is_err());
    assert!(TransMgr::parse(&tm(10, &[])).is_err());
    // Trailing bytes after PROMOTE.
    assert!(TransMgr::parse(&tm(tm::PROMOTE_XACT, &[0])).is_err());
    // Commit without XACT_FLAGS.
    assert!(TransMgr::parse(&tm(tm::COMMIT_XACT, &xname("t"))).is_err());
    // Reserved flag bits followed by something that is not a transaction.
    let mut b = xname("t");
    b.push(0x02);
    b.push(2);
    assert!(TransMgr::parse(&tm(tm::COMMIT_XACT, &b)).is_err());
    // fBeginXact without the new transaction.
    let mut b = xname("t");
    b.push(0x01);
    assert!(TransMgr::parse(&tm(tm::ROLLBACK_XACT, &b)).is_err());
    // Name length past the end, and odd.
    assert!(TransMgr::parse(&tm(tm::SAVE_XACT, &[10, b'a', 0])).is_err());
    assert!(TransMgr::parse(&tm(tm::SAVE_XACT, &[1, b'a'])).is_err());
    // No request type at all.
    assert!(TransMgr::parse(&Bytes::from_static(&TXN_HEADERS)).is_err());
}

#[test]
fn transaction_requests_read_as_the_statements_they_amount_to() {
    let mut body = vec![0];
    body.extend(xname("t1"));
    let t = TransMgr::parse(&tm(tm::BEGIN_XACT, &body)).unwrap();
    assert_eq!(t.describe(), "BEGIN TRANSACTION t1");
    // A commit that begins the next transaction at once (python-tds without autocommit).
    let t = TransMgr::parse(&tm(tm::COMMIT_XACT, &[0, 0x01, 0, 0])).unwrap();
    assert_eq!(t.describe(), "COMMIT TRANSACTION; BEGIN TRANSACTION");
    // Microsoft's mssql-tds sets bit 7 for the same.
    let mut body = xname("");
    body.extend([0x80, 2]);
    body.extend(xname("next"));
    let t = TransMgr::parse(&tm(tm::ROLLBACK_XACT, &body)).unwrap();
    assert_eq!(t.describe(), "ROLLBACK TRANSACTION; BEGIN TRANSACTION next");
    let t = TransMgr::parse(&tm(tm::COMMIT_XACT, &[0, 0])).unwrap();
    assert_eq!(t.describe(), "COMMIT TRANSACTION");
    // A name that is not a plain identifier is not carried into the text.
    let mut body = xname("x; drop table t");
    body.push(0);
    let t = TransMgr::parse(&tm(tm::COMMIT_XACT, &body)).unwrap();
    assert_eq!(t.describe(), "COMMIT TRANSACTION");
    let t = TransMgr::parse(&tm(tm::PROMOTE_XACT, &[])).unwrap();
    assert_eq!(t.describe(), "<transaction manager request 6>");
}

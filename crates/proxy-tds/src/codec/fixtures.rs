//! Hand-built token bytes for the tests, laid out field by field as MS-TDS 2.2.7 describes them
//! (independent of the crate's own writers).

use super::tokens::TokenKind;

/// SQL_Latin1_General_CP1_CI_AS.
pub(crate) const LATIN1: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];
/// Latin1_General_100_CI_AS_SC_UTF8.
pub(crate) const UTF8: [u8; 5] = [0x09, 0x04, 0x00, 0x04, 0x00];

pub(crate) fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

pub(crate) fn b_varchar(s: &str) -> Vec<u8> {
    let mut v = vec![s.encode_utf16().count() as u8];
    v.extend(ucs2(s));
    v
}

pub(crate) fn us_varchar(s: &str) -> Vec<u8> {
    let mut v = (s.encode_utf16().count() as u16).to_le_bytes().to_vec();
    v.extend(ucs2(s));
    v
}

/// TYPE_INFO of a ushort-length type, with a collation when given.
pub(crate) fn ushort_type(code: u8, max: u16, collation: Option<[u8; 5]>) -> Vec<u8> {
    let mut v = vec![code];
    v.extend(max.to_le_bytes());
    if let Some(c) = collation {
        v.extend(c);
    }
    v
}

/// One ColumnData of COLMETADATA. `table` is only given for TEXT/NTEXT/IMAGE.
pub(crate) fn column(flags: u16, type_info: &[u8], table: Option<&[&str]>, name: &str) -> Vec<u8> {
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend(flags.to_le_bytes());
    v.extend_from_slice(type_info);
    if let Some(parts) = table {
        v.push(parts.len() as u8);
        for p in parts {
            v.extend(us_varchar(p));
        }
    }
    v.extend(b_varchar(name));
    v
}

pub(crate) fn colmetadata(columns: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0x81];
    v.extend((columns.len() as u16).to_le_bytes());
    for c in columns {
        v.extend_from_slice(c);
    }
    v
}

pub(crate) fn done(token: u8, status: u16, cur_cmd: u16, rows: u64) -> Vec<u8> {
    let mut v = vec![token];
    v.extend(status.to_le_bytes());
    v.extend(cur_cmd.to_le_bytes());
    v.extend(rows.to_le_bytes());
    v
}

/// ERROR (0xAA) or INFO (0xAB).
pub(crate) fn message(token: u8, number: i32, class: u8, text: &str, server: &str) -> Vec<u8> {
    let mut body = number.to_le_bytes().to_vec();
    body.push(1);
    body.push(class);
    body.extend(us_varchar(text));
    body.extend(b_varchar(server));
    body.extend(b_varchar(""));
    body.extend(7i32.to_le_bytes());
    with_ushort_len(token, &body)
}

pub(crate) fn with_ushort_len(token: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![token];
    v.extend((body.len() as u16).to_le_bytes());
    v.extend_from_slice(body);
    v
}

pub(crate) fn env_change(kind: u8, new: &[u8], old: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(new);
    body.extend_from_slice(old);
    with_ushort_len(0xE3, &body)
}

pub(crate) fn login_ack(name: &str) -> Vec<u8> {
    let mut body = vec![1, 0x74, 0x00, 0x00, 0x04];
    body.extend(b_varchar(name));
    body.extend([16, 0, 0x10, 0x2E]);
    with_ushort_len(0xAD, &body)
}

/// A PLP value made of `chunks` and the terminator.
pub(crate) fn plp(total: u64, chunks: &[&[u8]]) -> Vec<u8> {
    let mut v = total.to_le_bytes().to_vec();
    for c in chunks {
        v.extend((c.len() as u32).to_le_bytes());
        v.extend_from_slice(c);
    }
    v.extend(0u32.to_le_bytes());
    v
}

pub(crate) fn ushort_value(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

/// A non-NULL TEXT/NTEXT/IMAGE value with a 16-byte text pointer.
pub(crate) fn text_value(data: &[u8]) -> Vec<u8> {
    let mut v = vec![16];
    v.extend([0xAB; 16]);
    v.extend([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08]);
    v.extend((data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// An SQL_VARIANT holding an NVARCHAR(max_chars) value.
pub(crate) fn variant_nvarchar(text: &str, max_bytes: u16) -> Vec<u8> {
    let data = ucs2(text);
    let mut body = vec![0xE7, 7];
    body.extend(LATIN1);
    body.extend(max_bytes.to_le_bytes());
    body.extend(data);
    let mut v = (body.len() as u32).to_le_bytes().to_vec();
    v.extend(body);
    v
}

/// Columns of the sample result set, in order:
/// 0 id INT4, 1 name NVARCHAR(40), 2 notes VARCHAR(MAX) latin1, 3 score INTN(4) nullable,
/// 4 bio NTEXT, 5 price DECIMALN(9,18,2), 6 blob VARBINARY(MAX), 7 any SQL_VARIANT,
/// 8 code NCHAR(4), 9 city VARCHAR(12) UTF-8.
pub(crate) fn sample_columns() -> Vec<Vec<u8>> {
    let mut ntext = vec![0x63, 0xFE, 0xFF, 0xFF, 0x7F];
    ntext.extend(LATIN1);
    vec![
        column(0, &[0x38], None, "id"),
        column(1, &ushort_type(0xE7, 80, Some(LATIN1)), None, "name"),
        column(1, &ushort_type(0xA7, 0xFFFF, Some(LATIN1)), None, "notes"),
        column(1, &[0x26, 4], None, "score"),
        column(1, &ntext, Some(&["dbo", "people"]), "bio"),
        column(1, &[0x6A, 9, 18, 2], None, "price"),
        column(1, &ushort_type(0xA5, 0xFFFF, None), None, "blob"),
        column(1, &[0x62, 0x50, 0x1F, 0, 0], None, "any"),
        column(1, &ushort_type(0xEF, 8, Some(LATIN1)), None, "code"),
        column(1, &ushort_type(0xA7, 12, Some(UTF8)), None, "city"),
    ]
}

pub(crate) fn sample_metadata_token() -> Vec<u8> {
    colmetadata(&sample_columns())
}

/// A ROW of the sample result set with every column set.
pub(crate) fn sample_row(name: &str, notes_chunks: &[&[u8]]) -> Vec<u8> {
    let mut v = vec![0xD1];
    v.extend(42i32.to_le_bytes());
    v.extend(ushort_value(&ucs2(name)));
    let total: usize = notes_chunks.iter().map(|c| c.len()).sum();
    v.extend(plp(total as u64, notes_chunks));
    v.extend([4, 7, 0, 0, 0]);
    v.extend(text_value(&ucs2("bio 4111-1111")));
    v.extend([5, 1, 0xE8, 0x03, 0, 0]);
    v.extend(plp(3, &[&[1, 2, 3]]));
    v.extend(variant_nvarchar("v 4111", 80));
    v.extend(ushort_value(&ucs2("AB  ")));
    v.extend(ushort_value("Kraków".as_bytes()));
    v
}

/// An NBCROW of the sample result set: only id, name and city are present.
pub(crate) fn sample_nbcrow(name: &str) -> Vec<u8> {
    // columns 2..=8 null: bits 2-7 of byte 0 and bit 0 of byte 1
    let mut v = vec![0xD2, 0b1111_1100, 0b0000_0001];
    v.extend(7i32.to_le_bytes());
    v.extend(ushort_value(&ucs2(name)));
    v.extend(ushort_value(b"Lodz"));
    v
}

/// A response mixing every token the parser frames, and the (kind, length) of each.
pub(crate) fn sample_stream() -> (Vec<u8>, Vec<(TokenKind, usize)>) {
    use TokenKind as K;
    let mut data_classification = vec![0xA3, 1, 0];
    data_classification.extend(b_varchar("Confidential"));
    data_classification.extend(b_varchar("c1"));
    data_classification.extend([1, 0]);
    data_classification.extend(b_varchar("Credit Card"));
    data_classification.extend(b_varchar("i1"));
    data_classification.extend([1, 0, 1, 0, 0, 0, 0, 0]);
    let mut return_value = vec![0xAC, 1, 0];
    return_value.extend(b_varchar("@out"));
    return_value.push(1);
    return_value.extend([0, 0, 0, 0, 1, 0]);
    return_value.extend(ushort_type(0xE7, 0xFFFF, Some(LATIN1)));
    return_value.extend(plp(4, &[&ucs2("ok")]));
    let tokens: Vec<(K, Vec<u8>)> = vec![
        (K::ColMetadata, sample_metadata_token()),
        (K::DataClassification, data_classification),
        (
            K::Row,
            sample_row("Ann", &[b"card 4111", b" 1111 1111 1111"]),
        ),
        (
            K::Info,
            message(0xAB, 5701, 0, "Changed database context", "srv"),
        ),
        (K::NbcRow, sample_nbcrow("Bob")),
        (K::Row, sample_row("Cy", &[])),
        (K::Order, with_ushort_len(0xA9, &[1, 0])),
        (K::Done, done(0xFD, 0x11, 0xC1, 3)),
        (K::ReturnStatus, vec![0x79, 0, 0, 0, 0]),
        (K::ReturnValue, return_value),
        (K::DoneInProc, done(0xFF, 0x01, 0xC1, 0)),
        (K::DoneProc, done(0xFE, 0x00, 0xE0, 0)),
        (K::Done, done(0xFD, 0x00, 0, 0)),
    ];
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for (kind, token) in tokens {
        expected.push((kind, token.len()));
        bytes.extend(token);
    }
    (bytes, expected)
}

/// A login response: LOGINACK, ENVCHANGEs, FEATUREEXTACK, DONE.
pub(crate) fn login_stream() -> Vec<u8> {
    let mut v = login_ack("Microsoft SQL Server");
    v.extend(env_change(1, &b_varchar("master"), &b_varchar("")));
    v.extend(env_change(4, &b_varchar("8000"), &b_varchar("4096")));
    let mut coll = vec![5];
    coll.extend(LATIN1);
    v.extend(env_change(7, &coll, &[0]));
    v.extend([0xAE, 0x02, 0, 0, 0, 0, 0x0A, 1, 0, 0, 0, 1, 0xFF]);
    v.extend(done(0xFD, 0, 0, 0));
    v
}

//! RowDescription and DataRow, the two messages result masking reads and rebuilds.

use super::CodecError;
use super::reader::Reader;

/// One column of a RowDescription (`'T'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    /// Column name (or alias).
    pub name: &'a str,
    /// OID of the source table, 0 if the column is not a plain table column.
    pub table_oid: u32,
    /// Attribute number in the source table, 0 if none.
    pub column_id: i16,
    /// OID of the column's data type.
    pub type_oid: u32,
    /// Data type size (negative for variable width).
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// 0 for text, 1 for binary.
    pub format: i16,
}

/// Smallest encoded field: empty name plus the fixed 18 bytes.
const MIN_FIELD_LEN: usize = 1 + 4 + 2 + 4 + 2 + 4 + 2;

/// Decodes a RowDescription body.
pub fn parse_row_description(body: &[u8]) -> Result<Vec<FieldDescription<'_>>, CodecError> {
    let mut r = Reader::new(body);
    let count = usize::from(r.u16()?);
    let mut fields = r.vec_for(count, MIN_FIELD_LEN)?;
    for _ in 0..count {
        fields.push(FieldDescription {
            name: r.cstr()?,
            table_oid: r.u32()?,
            column_id: r.i16()?,
            type_oid: r.u32()?,
            type_size: r.i16()?,
            type_modifier: r.i32()?,
            format: r.i16()?,
        });
    }
    r.finish()?;
    Ok(fields)
}

/// Decodes a DataRow (`'D'`) body into its column values; `None` is SQL NULL.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, CodecError> {
    let mut r = Reader::new(body);
    let count = usize::from(r.u16()?);
    let mut values = r.vec_for(count, 4)?;
    for _ in 0..count {
        values.push(r.nullable_bytes()?);
    }
    r.finish()?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_description() {
        let mut body = vec![0, 2];
        for (name, ty) in [(&b"id"[..], 23u32), (b"email", 25)] {
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(&16384u32.to_be_bytes());
            body.extend_from_slice(&1i16.to_be_bytes());
            body.extend_from_slice(&ty.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
        }
        let fields = parse_row_description(&body).unwrap();
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].name, "email");
        assert_eq!(fields[1].type_oid, 25);
        assert_eq!(fields[0].table_oid, 16384);
        assert_eq!(fields[0].type_modifier, -1);
        for cut in 0..body.len() {
            assert!(parse_row_description(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_row_description(&[0xff, 0xff, 0]).is_err());
    }

    #[test]
    fn data_row() {
        let body = b"\0\x03\0\0\0\x011\xff\xff\xff\xff\0\0\0\0";
        assert_eq!(
            parse_data_row(body).unwrap(),
            vec![Some(&b"1"[..]), None, Some(&b""[..])]
        );
        for cut in 0..body.len() {
            assert!(parse_data_row(&body[..cut]).is_err(), "cut at {cut}");
        }
        assert!(parse_data_row(b"\0\x01\xff\xff\xff\xfe").is_err());
        assert!(parse_data_row(b"\0\0x").is_err());
        assert_eq!(
            parse_data_row(b"\0\0").unwrap(),
            Vec::<Option<&[u8]>>::new()
        );
    }
}

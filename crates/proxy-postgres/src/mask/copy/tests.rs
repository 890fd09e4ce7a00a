use super::*;

#[test]
fn options_in_every_spelling() {
    let csv = CopyFormat::Csv {
        delimiter: b',',
        quote: b'"',
    };
    let text = CopyFormat::Text { delimiter: b'\t' };
    for (sql, format, header) in [
        ("COPY t TO STDOUT (FORMAT 'csv')", csv, false),
        (
            "COPY t TO STDOUT (FORMAT \"csv\", HEADER 'true')",
            csv,
            true,
        ),
        ("COPY t TO STDOUT WITH (FORMAT csv, HEADER)", csv, true),
        ("COPY t TO STDOUT (format CSV, header false)", csv, false),
        ("COPY t (id, card) TO STDOUT (FORMAT 'text')", text, false),
        (
            "COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (csv, binary))",
            csv,
            false,
        ),
        (
            "COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE *, ENCODING 'UTF8')",
            csv,
            false,
        ),
        (
            "COPY t TO STDOUT WITH CSV HEADER FORCE QUOTE csv, binary",
            csv,
            true,
        ),
        ("COPY t TO STDOUT WITH NULL AS 'x' CSV", csv, false),
        ("COPY t TO STDOUT", text, false),
        (
            "COPY t TO STDOUT (DELIMITER '|')",
            CopyFormat::Text { delimiter: b'|' },
            false,
        ),
        (
            "COPY t TO STDOUT (FORMAT 'binary')",
            CopyFormat::Binary,
            false,
        ),
        // Nothing this reader can follow: whole lines.
        ("COPY t TO STDOUT (FORMAT 'CSV')", CopyFormat::Lines, false),
        (
            "COPY t TO STDOUT (FORMAT csv, BOGUS 1)",
            CopyFormat::Lines,
            false,
        ),
        ("COPY t TO STDOUT (FORMAT csv", CopyFormat::Lines, false),
        ("COPY t TO STDOUT CSV FORCE", CopyFormat::Lines, false),
    ] {
        let c = parse_copy(sql).unwrap_or_else(|| panic!("{sql}"));
        assert_eq!((c.format, c.header), (format, header), "{sql}");
    }
    let c = parse_copy("COPY t (id, card) TO STDOUT (FORMAT 'text')").unwrap();
    assert_eq!(c.describe.as_deref(), Some("SELECT id, card FROM t"));
}

#[test]
fn copy_statements() {
    let c = parse_copy("COPY customers (id, email) TO STDOUT WITH (FORMAT csv)").unwrap();
    assert_eq!(
        c.describe.as_deref(),
        Some("SELECT id, email FROM customers")
    );
    assert_eq!(
        c.format,
        CopyFormat::Csv {
            delimiter: b',',
            quote: b'"'
        }
    );
    let c = parse_copy("copy (select * from t where x = ')') to stdout").unwrap();
    assert_eq!(c.describe.as_deref(), Some("select * from t where x = ')'"));
    assert_eq!(c.format, CopyFormat::Text { delimiter: b'\t' });
    let c = parse_copy("COPY public.t TO STDOUT (FORMAT binary)").unwrap();
    assert_eq!(c.format, CopyFormat::Binary);
    assert_eq!(c.describe.as_deref(), Some("SELECT * FROM public.t"));
    let c = parse_copy("COPY t TO STDOUT BINARY").unwrap();
    assert_eq!(c.format, CopyFormat::Binary);
    let c = parse_copy("COPY t TO STDOUT WITH DELIMITER ';' CSV").unwrap();
    assert_eq!(
        c.format,
        CopyFormat::Csv {
            delimiter: b';',
            quote: b'"'
        }
    );
    let c = parse_copy("COPY t TO STDOUT (FORMAT csv, ESCAPE '\\')").unwrap();
    assert_eq!(c.format, CopyFormat::Lines);
    assert!(parse_copy("COPY t FROM STDIN").is_none());
    assert!(parse_copy("COPY t TO '/tmp/x'").is_none());
    assert!(parse_copy("SELECT 1").is_none());
    let c = parse_copy("COPY t TO STDOUT (DELIMITER E'\\t', FORMAT binary)").unwrap();
    assert_eq!(c.format, CopyFormat::Binary);
    assert_eq!(c.describe, None);
}

fn mask_emails(_: usize, v: &[u8], out: &mut Vec<u8>) -> Masked {
    if v.contains(&b'@') {
        out.clear();
        out.extend_from_slice(b"[X]");
        Masked::Replaced
    } else if v == b"nullme" {
        Masked::Null
    } else {
        Masked::Unchanged
    }
}

fn run(data: &[u8], f: CopyFormat) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    let mut sc = CopyScratch::default();
    rewrite_copy_data(data, f, &mut sc, &mut out, mask_emails).then(|| {
        let mut o = out;
        let fr = crate::codec::next_frame(&mut o, 1 << 20).unwrap().unwrap();
        assert!(o.is_empty());
        fr.body().to_vec()
    })
}

#[test]
fn text_rows() {
    let t = CopyFormat::Text { delimiter: b'\t' };
    assert_eq!(run(b"1\tada\t\\N\n", t), None);
    assert_eq!(
        run(b"1\ta@b.io\tx\\tnullme\tnullme\n", t).unwrap(),
        b"1\t[X]\tx\\tnullme\t\\N\n"
    );
    assert_eq!(run(b"1\ta\\\\@b\n", t).unwrap(), b"1\t[X]\n");
}

#[test]
fn csv_rows() {
    let c = CopyFormat::Csv {
        delimiter: b',',
        quote: b'"',
    };
    assert_eq!(run(b"1,ada,\n", c), None);
    assert_eq!(
        run(b"1,\"x, \"\"a@b.io\"\"\",a@c.io,nullme\n", c).unwrap(),
        b"1,\"[X]\",\"[X]\",\n"
    );
    assert_eq!(
        run(b"\"multi\nline a@b.io\",2\n", c).unwrap(),
        b"\"[X]\",2\n"
    );
}

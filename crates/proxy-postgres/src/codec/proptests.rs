//! Property tests: framing survives any chunking, and encoders round-trip through decoders.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::*;

/// What the peer reads for a string we wrote: interior NULs are dropped by the encoders.
fn without_nul(s: &str) -> String {
    s.replace('\0', "")
}

fn one_frame(mut buf: BytesMut, tag: u8) -> Frame {
    let frame = next_frame(&mut buf, DEFAULT_MAX_MESSAGE).unwrap().unwrap();
    assert!(buf.is_empty(), "encoder wrote exactly one message");
    assert_eq!(frame.tag, tag);
    frame
}

fn severity() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("ERROR"),
        Just("FATAL"),
        Just("WARNING"),
        Just("NOTICE"),
        Just("LOG")
    ]
}

proptest! {
    #[test]
    fn frames_reassemble_across_any_chunking(
        messages in vec((any::<u8>(), vec(any::<u8>(), 0..300)), 0..20),
        chunks in vec(1usize..64, 1..30),
    ) {
        let mut input = Vec::new();
        let mut spans = Vec::new();
        for (tag, body) in &messages {
            let start = input.len();
            input.push(*tag);
            input.extend_from_slice(&(u32::try_from(body.len()).unwrap() + 4).to_be_bytes());
            input.extend_from_slice(body);
            spans.push(start..input.len());
        }

        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        for size in chunks.iter().cycle() {
            if fed == input.len() {
                break;
            }
            let end = (fed + size).min(input.len());
            buf.extend_from_slice(&input[fed..end]);
            fed = end;
            while let Some(frame) = next_frame(&mut buf, 1024).unwrap() {
                frames.push(frame);
            }
        }

        prop_assert!(buf.is_empty());
        prop_assert_eq!(frames.len(), messages.len());
        for ((frame, (tag, body)), span) in frames.iter().zip(&messages).zip(spans) {
            prop_assert_eq!(frame.tag, *tag);
            prop_assert_eq!(&frame.raw[..], &input[span]);
            prop_assert_eq!(frame.body(), &body[..]);
        }
    }

    #[test]
    fn error_fields_round_trip(
        severity in severity(),
        code in "[0-9A-Z]{5}",
        message in any::<String>(),
        detail in option::of(any::<String>()),
        hint in option::of(any::<String>()),
    ) {
        let mut buf = BytesMut::new();
        put_error(&mut buf, severity, &code, &message, detail.as_deref(), hint.as_deref());
        let frame = one_frame(buf, tags::backend::ERROR);
        let f = parse_error_fields(frame.body()).unwrap();
        prop_assert_eq!(f.severity, severity);
        prop_assert_eq!(f.severity_nonlocalized, Some(severity));
        prop_assert_eq!(f.code, code.as_str());
        prop_assert_eq!(f.message, without_nul(&message));
        prop_assert_eq!(f.detail.map(str::to_owned), detail.as_deref().map(without_nul));
        prop_assert_eq!(f.hint.map(str::to_owned), hint.as_deref().map(without_nul));
    }

    #[test]
    fn notice_fields_round_trip(
        severity in severity(),
        code in "[0-9A-Z]{5}",
        message in any::<String>(),
        detail in option::of(any::<String>()),
    ) {
        let mut buf = BytesMut::new();
        put_notice(&mut buf, severity, &code, &message, detail.as_deref());
        let frame = one_frame(buf, tags::backend::NOTICE);
        let f = parse_error_fields(frame.body()).unwrap();
        prop_assert_eq!(f.severity, severity);
        prop_assert_eq!(f.code, code.as_str());
        prop_assert_eq!(f.message, without_nul(&message));
        prop_assert_eq!(f.detail.map(str::to_owned), detail.as_deref().map(without_nul));
        prop_assert_eq!(f.hint, None);
    }

    #[test]
    fn startup_params_round_trip(
        params in vec(("[a-z_.]{1,20}", "\\PC{0,40}"), 0..12),
    ) {
        let mut with_nul = params.clone();
        with_nul.push(("x".into(), "a\0b".into()));
        let borrowed: Vec<(&str, &str)> =
            with_nul.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut buf = BytesMut::new();
        put_startup(&mut buf, &borrowed);
        let packet = next_startup(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        let expected: Vec<(String, String)> =
            with_nul.iter().map(|(k, v)| (k.clone(), without_nul(v))).collect();
        prop_assert_eq!(packet, StartupPacket::Startup { version: PROTOCOL_3_0, params: expected });
    }

    #[test]
    fn cancel_round_trip(pid in any::<i32>(), key in vec(any::<u8>(), MIN_CANCEL_KEY..=MAX_CANCEL_KEY)) {
        let mut buf = BytesMut::new();
        put_cancel_request(&mut buf, pid, &key);
        prop_assert_eq!(
            next_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel { pid, key: key.clone() })
        );
        let mut buf = BytesMut::new();
        put_backend_key_data(&mut buf, pid, &key);
        let frame = one_frame(buf, tags::backend::BACKEND_KEY);
        prop_assert_eq!(parse_backend_key_data(frame.body()).unwrap(), (pid, &key[..]));
    }

    #[test]
    fn parse_round_trip(
        name in "[^\\x00]{0,20}",
        query in "[^\\x00]{0,200}",
        param_types in vec(any::<u32>(), 0..20),
    ) {
        let parse = Parse { name: &name, query: &query, param_types };
        let mut buf = BytesMut::new();
        put_parse(&mut buf, &parse).unwrap();
        let frame = one_frame(buf, tags::frontend::PARSE);
        prop_assert_eq!(parse_parse(frame.body()).unwrap(), parse);
    }

    #[test]
    fn bind_round_trip(
        portal in "[^\\x00]{0,20}",
        statement in "[^\\x00]{0,20}",
        values in vec(option::of(vec(any::<u8>(), 0..50)), 0..20),
        formats in vec(0i16..2, 20),
        format_mode in 0usize..3,
        result_formats in vec(any::<i16>(), 0..10),
    ) {
        // Zero formats, one for all, or one per parameter: the three layouts servers accept.
        let n_formats = [0, 1.min(values.len()), values.len()][format_mode];
        let bind = Bind {
            portal: &portal,
            statement: &statement,
            param_formats: formats[..n_formats].to_vec(),
            params: values.iter().map(Option::as_deref).collect(),
            result_formats,
        };
        let mut buf = BytesMut::new();
        put_bind(&mut buf, &bind).unwrap();
        let frame = one_frame(buf, tags::frontend::BIND);
        prop_assert_eq!(parse_bind(frame.body()).unwrap(), bind);
    }

    #[test]
    fn data_row_round_trip(values in vec(option::of(vec(any::<u8>(), 0..50)), 0..30)) {
        let values: Vec<Option<&[u8]>> = values.iter().map(Option::as_deref).collect();
        let mut buf = BytesMut::new();
        put_data_row(&mut buf, &values).unwrap();
        let frame = one_frame(buf, tags::backend::DATA_ROW);
        prop_assert_eq!(parse_data_row(frame.body()).unwrap(), values);
    }

    #[test]
    fn simple_messages_round_trip(text in "[^\\x00]{0,100}", value in "[^\\x00]{0,100}") {
        let mut buf = BytesMut::new();
        put_query(&mut buf, &text);
        let frame = one_frame(buf, b'Q');
        prop_assert_eq!(parse_query(frame.body()).unwrap(), text.as_str());
        let mut buf = BytesMut::new();
        put_password(&mut buf, text.as_bytes());
        let frame = one_frame(buf, b'p');
        prop_assert_eq!(parse_password(frame.body()).unwrap(), text.as_str());
        let mut buf = BytesMut::new();
        put_command_complete(&mut buf, &text);
        let frame = one_frame(buf, b'C');
        prop_assert_eq!(parse_command_complete(frame.body()).unwrap(), text.as_str());
        let mut buf = BytesMut::new();
        put_parameter_status(&mut buf, &text, &value);
        let frame = one_frame(buf, b'S');
        prop_assert_eq!(
            parse_parameter_status(frame.body()).unwrap(),
            (text.as_str(), value.as_str())
        );
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bodies(body in vec(any::<u8>(), 0..64)) {
        let _ = parse_query(&body);
        let _ = parse_parse(&body);
        let _ = parse_bind(&body);
        let _ = parse_describe(&body);
        let _ = parse_close(&body);
        let _ = parse_execute(&body);
        let _ = parse_password(&body);
        let _ = parse_auth_request(&body);
        let _ = parse_parameter_status(&body);
        let _ = parse_backend_key_data(&body);
        let _ = parse_ready_for_query(&body);
        let _ = parse_command_complete(&body);
        let _ = parse_error_fields(&body);
        let _ = parse_row_description(&body);
        let _ = parse_data_row(&body);
        let mut buf = BytesMut::from(&body[..]);
        while let Ok(Some(_)) = next_frame(&mut buf, 64) {}
        let mut buf = BytesMut::from(&body[..]);
        let _ = next_startup(&mut buf);
    }
}

/// The masking a DataRow rewriter is tested with: every detector and a column rule.
fn test_masks() -> std::sync::Arc<gateway_core::masking::SessionMasks> {
    let block = gateway_core::config::MaskingConfig {
        connections: vec!["c".into()],
        detectors: ["card", "email", "ssn", "iban", "phone", "secret"]
            .map(String::from)
            .to_vec(),
        columns: vec!["*.ssn".into()],
        ..Default::default()
    };
    gateway_core::masking::MaskingEngine::new(&[block], [7; 32])
        .unwrap()
        .for_session("c", &[])
        .unwrap()
}

fn cell() -> impl Strategy<Value = Option<Vec<u8>>> {
    let sensitive = prop_oneof![
        Just(&b"ada@example.com"[..]),
        Just(&b"4111 1111 1111 1111"[..]),
        Just(&b"078-05-1120"[..]),
        Just(&b"DE89 3704 0044 0532 0130 00"[..]),
        Just(&b"AccountKey=abc123/xyz==;"[..]),
    ];
    prop_oneof![
        Just(None),
        "[a-z ]{0,40}".prop_map(|s| Some(s.into_bytes())),
        ("[a-z ]{0,10}", sensitive, "[a-z ]{0,10}").prop_map(|(a, s, b)| {
            let mut v = a.into_bytes();
            v.extend_from_slice(s);
            v.extend_from_slice(b.as_bytes());
            Some(v)
        }),
        vec(any::<u8>(), 0..64).prop_map(Some),
    ]
}

proptest! {
    #[test]
    fn masked_data_rows_are_well_formed_and_harmless_values_unchanged(
        cells in vec(cell(), 0..12),
        ssn_col in 0usize..12,
    ) {
        use gateway_core::masking::{ColumnRef, MaskCounts, TypeHint};
        let masks = test_masks();
        let cols: Vec<ColumnRef<'_>> = (0..cells.len())
            .map(|i| ColumnRef {
                table: Some("public.customers"),
                name: if i == ssn_col { "ssn" } else { "note" },
                hint: if i % 5 == 4 { TypeHint::Numeric } else { TypeHint::Text },
            })
            .collect();
        let plan = masks.columns(cols, None);
        let values: Vec<Option<&[u8]>> = cells.iter().map(|c| c.as_deref()).collect();
        let mut raw = BytesMut::new();
        put_data_row(&mut raw, &values).unwrap();
        let mut out = BytesMut::new();
        let mut scratch = Vec::new();
        let mut counts = MaskCounts::new();
        let changed = rewrite_data_row(&raw, &mut scratch, &mut out, |col, v, s| {
            plan.mask(col, v, s, &mut counts)
        })
        .unwrap();
        let frame = if changed {
            let f = one_frame(out, b'D');
            prop_assert!(counts.values() > 0);
            f
        } else {
            prop_assert!(out.is_empty());
            prop_assert_eq!(counts.values(), 0);
            one_frame(raw.clone(), b'D')
        };
        let got = parse_data_row(frame.body()).unwrap();
        prop_assert_eq!(got.len(), values.len());
        for (i, (g, v)) in got.iter().zip(&values).enumerate() {
            let harmless = v.is_some_and(|v| v.iter().all(|b| b.is_ascii_lowercase() || *b == b' '));
            if v.is_none() || (harmless && i != ssn_col) {
                prop_assert_eq!(g, v, "column {} changed", i);
            }
            if i == ssn_col && v.is_some() {
                prop_assert_ne!(g, v, "a column rule masks every value");
            }
        }
    }
}

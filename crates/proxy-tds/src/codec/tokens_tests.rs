use super::*;
use crate::codec::fixtures::*;
use crate::codec::messages::{done_status, env_type};
use crate::codec::types::{Collation, DataType, LengthKind};

/// Parses `bytes` as a whole; every token must be complete.
fn parse_all(bytes: &[u8], state: &mut StreamState) -> Vec<(Token, usize)> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        let (token, len) = next_token(&bytes[pos..], state)
            .unwrap()
            .expect("complete token");
        assert!(len > 0);
        pos += len;
        out.push((token, len));
    }
    out
}

/// Feeds `bytes` in pieces cut at `cuts`, as packets would arrive, and returns the
/// (kind, start, len) of each token found.
fn parse_arriving(bytes: &[u8], cuts: &[usize]) -> Vec<(TokenKind, usize, usize)> {
    let mut state = StreamState::new();
    let mut found = Vec::new();
    let mut pos = 0;
    for &arrived in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let buf = &bytes[..arrived];
        while let Some((token, len)) = next_token(&buf[pos..], &mut state).unwrap() {
            found.push((token.kind(), pos, len));
            pos += len;
        }
    }
    assert_eq!(pos, bytes.len(), "whole stream consumed");
    found
}

fn expected_spans(expected: &[(TokenKind, usize)]) -> Vec<(TokenKind, usize, usize)> {
    let mut pos = 0;
    expected
        .iter()
        .map(|&(kind, len)| {
            let span = (kind, pos, len);
            pos += len;
            span
        })
        .collect()
}

#[test]
fn sample_stream_frames_every_token() {
    let (bytes, expected) = sample_stream();
    let tokens = parse_all(&bytes, &mut StreamState::new());
    let got: Vec<_> = tokens.iter().map(|(t, len)| (t.kind(), *len)).collect();
    assert_eq!(got, expected);
    let last = &tokens.last().unwrap().0;
    assert!(last.ends_response());
    assert!(
        !tokens[7].0.ends_response(),
        "DONE with DONE_MORE is not the end"
    );
    assert!(
        !tokens[10].0.ends_response(),
        "DONEINPROC never ends a response"
    );
}

#[test]
fn every_split_point_gives_the_same_tokens() {
    let (bytes, expected) = sample_stream();
    let want = expected_spans(&expected);
    for cut in 0..=bytes.len() {
        assert_eq!(parse_arriving(&bytes, &[cut]), want, "split at {cut}");
    }
}

#[test]
fn every_pair_of_split_points_in_the_first_row_gives_the_same_tokens() {
    let (bytes, expected) = sample_stream();
    let want = expected_spans(&expected);
    let row_start = want[2].1;
    let row_end = row_start + want[2].2;
    for a in row_start..row_end {
        for b in a..=row_end {
            assert_eq!(
                parse_arriving(&bytes, &[a, b]),
                want,
                "splits at {a} and {b}"
            );
        }
    }
}

#[test]
fn byte_by_byte_and_packet_sized_arrival() {
    let (bytes, expected) = sample_stream();
    let want = expected_spans(&expected);
    for step in [1, 2, 3, 7, 8, 64, 512] {
        let cuts: Vec<usize> = (step..bytes.len()).step_by(step).collect();
        assert_eq!(parse_arriving(&bytes, &cuts), want, "pieces of {step}");
    }
}

#[test]
fn a_partial_row_resumes_where_it_stopped() {
    let meta = sample_metadata_token();
    let row = sample_row("Ann", &[&b"0123456789"[..]; 50]);
    let mut state = StreamState::new();
    let (_, len) = next_token(&meta, &mut state).unwrap().unwrap();
    assert_eq!(len, meta.len());
    // the first 300 bytes hold id, name and part of the PLP value
    assert_eq!(next_token(&row[..300], &mut state).unwrap(), None);
    let partial = state.partial.as_ref().expect("cursor kept");
    assert_eq!(partial.seen, 300);
    assert!(partial.cursor != RowCursor::default());
    assert_eq!(
        next_token(&row, &mut state).unwrap(),
        Some((Token::Row, row.len()))
    );
    assert!(state.partial.is_none());
}

#[test]
fn a_different_buffer_after_need_more_starts_the_row_over() {
    let mut state = StreamState::new();
    next_token(&sample_metadata_token(), &mut state)
        .unwrap()
        .unwrap();
    let long = sample_row("Ann", &[&b"0123456789"[..]; 5]);
    assert_eq!(next_token(&long[..60], &mut state).unwrap(), None);
    // the caller moved on to another, shorter row: the stale cursor is not trusted
    let short = sample_nbcrow("Bob");
    assert_eq!(
        next_token(&short, &mut state).unwrap(),
        Some((Token::NbcRow, short.len()))
    );
}

#[test]
fn login_stream_splits_at_every_point() {
    let bytes = login_stream();
    let whole = parse_arriving(&bytes, &[]);
    assert_eq!(whole.len(), 6);
    for cut in 0..=bytes.len() {
        assert_eq!(parse_arriving(&bytes, &[cut]), whole, "split at {cut}");
    }
}

#[test]
fn colmetadata_is_parsed_and_kept() {
    let mut state = StreamState::new();
    let (token, _) = next_token(&sample_metadata_token(), &mut state)
        .unwrap()
        .unwrap();
    let Token::ColMetadata(meta) = token else {
        panic!("{token:?}")
    };
    assert_eq!(state.metadata(), Some(&meta));
    assert_eq!(meta.len(), 10);
    let bio = &meta.columns[4];
    assert_eq!(
        (bio.name.as_str(), bio.table_name.clone()),
        ("bio", vec!["dbo".to_string(), "people".into()])
    );
    assert_eq!(bio.type_info.data_type, DataType::NText);
    assert_eq!(meta.columns[2].type_info.length, LengthKind::Plp);
    assert!(!meta.columns[0].is_nullable() && meta.columns[1].is_nullable());
    assert!(meta.has_text());
}

#[test]
fn no_metadata_count_clears_the_metadata() {
    let mut state = StreamState::new();
    next_token(&sample_metadata_token(), &mut state)
        .unwrap()
        .unwrap();
    assert_eq!(
        next_token(&[0x81, 0xFF, 0xFF], &mut state).unwrap(),
        Some((Token::NoMetadata, 3))
    );
    assert!(state.metadata().is_none());
    let err = next_token(&sample_nbcrow("x"), &mut state).unwrap_err();
    assert!(err.to_string().contains("COLMETADATA"), "{err}");
}

#[test]
fn done_tokens() {
    let mut state = StreamState::new();
    let attn = done(0xFD, done_status::ATTN, 0, 0);
    let (token, len) = next_token(&attn, &mut state).unwrap().unwrap();
    assert_eq!(len, 13);
    let d = token.done().unwrap();
    assert!(d.is_attention_ack() && !d.has_more() && token.ends_response());
    let (token, _) = next_token(&done(0xFE, 0x0113, 0xE0, 9), &mut state)
        .unwrap()
        .unwrap();
    let d = *token.done().unwrap();
    assert!(d.has_more() && d.is_error());
    assert_eq!((d.cur_cmd, d.row_count), (0xE0, 9));
    assert_eq!(next_token(&attn[..12], &mut state).unwrap(), None);
    // one RPC of a batch done: more RPC results follow
    let in_batch = done(0xFE, done_status::RPCINBATCH, 0xE0, 0);
    let (token, _) = next_token(&in_batch, &mut state).unwrap().unwrap();
    assert!(!token.ends_response());
}

#[test]
fn error_and_info() {
    let mut state = StreamState::new();
    let bytes = message(0xAA, 229, 14, "The SELECT permission was denied", "db1");
    let (token, len) = next_token(&bytes, &mut state).unwrap().unwrap();
    assert_eq!(len, bytes.len());
    let Token::Error(m) = token else {
        panic!("{token:?}")
    };
    assert_eq!((m.number, m.state, m.class, m.line), (229, 1, 14, 7));
    assert_eq!(
        (m.message.as_str(), m.server.as_str()),
        ("The SELECT permission was denied", "db1")
    );
    let info = message(0xAB, 5701, 0, "ctx", "");
    assert!(matches!(
        next_token(&info, &mut state).unwrap(),
        Some((Token::Info(_), _))
    ));
}

#[test]
fn error_is_framed_by_its_fields_like_clients_do() {
    // mssql-mock-tds writes this length big-endian; clients read the fields, and so do we
    let mut bytes = message(0xAA, 50000, 16, "Not authenticated", "");
    bytes.swap(1, 2);
    let with_done = [bytes.clone(), done(0xFD, 0, 0, 0)].concat();
    let tokens = parse_all(&with_done, &mut StreamState::new());
    assert_eq!(tokens[0].1, bytes.len());
    assert!(tokens[1].0.ends_response());
}

#[test]
fn login_response() {
    let mut state = StreamState::new();
    let tokens = parse_all(&login_stream(), &mut state);
    let Token::LoginAck(ack) = &tokens[0].0 else {
        panic!()
    };
    assert_eq!((ack.interface, ack.tds_version), (1, 0x7400_0004));
    assert_eq!(
        (ack.prog_name.as_str(), ack.prog_version),
        ("Microsoft SQL Server", [16, 0, 0x10, 0x2E])
    );
    assert_eq!(
        tokens[1].0,
        Token::EnvChange(EnvChange::Database {
            new: "master".into(),
            old: String::new()
        })
    );
    assert_eq!(
        tokens[2].0,
        Token::EnvChange(EnvChange::PacketSize {
            new: 8000,
            old: Some(4096)
        })
    );
    assert_eq!(
        tokens[3].0,
        Token::EnvChange(EnvChange::Collation {
            new: Some(Collation(LATIN1)),
            old: None
        })
    );
    let Token::FeatureExtAck(acks) = &tokens[4].0 else {
        panic!()
    };
    assert_eq!(acks.len(), 2);
    assert_eq!((acks[0].id, acks[0].data.len()), (0x02, 0));
    assert_eq!((acks[1].id, acks[1].data.as_slice()), (0x0A, &[1][..]));
    assert!(tokens[5].0.ends_response());
}

#[test]
fn env_changes() {
    let mut state = StreamState::new();
    let parse = |bytes: Vec<u8>, state: &mut StreamState| match next_token(&bytes, state).unwrap() {
        Some((Token::EnvChange(e), len)) if len == bytes.len() => e,
        other => panic!("{other:?}"),
    };
    let d = 0x0102_0304_0506_0708u64.to_le_bytes();
    let with_len = |b: &[u8]| [&[b.len() as u8][..], b].concat();
    assert_eq!(
        parse(
            env_change(env_type::BEGIN_TRAN, &with_len(&d), &[0]),
            &mut state
        ),
        EnvChange::BeginTransaction {
            descriptor: 0x0102_0304_0506_0708
        }
    );
    assert_eq!(
        parse(
            env_change(env_type::COMMIT_TRAN, &[0], &with_len(&d)),
            &mut state
        ),
        EnvChange::CommitTransaction {
            descriptor: 0x0102_0304_0506_0708
        }
    );
    assert_eq!(
        parse(
            env_change(env_type::ROLLBACK_TRAN, &[0], &with_len(&d)),
            &mut state
        ),
        EnvChange::RollbackTransaction {
            descriptor: 0x0102_0304_0506_0708
        }
    );
    assert_eq!(
        parse(env_change(18, &[0], &[0]), &mut state),
        EnvChange::ResetConnectionAck
    );
    assert_eq!(
        parse(
            env_change(2, &b_varchar("us_english"), &b_varchar("")),
            &mut state
        ),
        EnvChange::Language {
            new: "us_english".into(),
            old: String::new()
        }
    );
    assert_eq!(
        parse(env_change(13, &b_varchar("mirror"), &[0]), &mut state),
        EnvChange::MirrorPartner {
            server: "mirror".into()
        }
    );
    let mut routing = vec![0];
    routing.extend(1433u16.to_le_bytes());
    routing.extend(us_varchar("node2.example"));
    let mut new = (routing.len() as u16).to_le_bytes().to_vec();
    new.extend(&routing);
    assert_eq!(
        parse(env_change(20, &new, &[0, 0]), &mut state),
        EnvChange::Routing {
            protocol: 0,
            port: 1433,
            server: "node2.example".into()
        }
    );
    routing.extend(us_varchar("db2"));
    let mut new = (routing.len() as u16).to_le_bytes().to_vec();
    new.extend(&routing);
    assert_eq!(
        parse(env_change(21, &new, &[0, 0]), &mut state),
        EnvChange::EnhancedRouting {
            protocol: 0,
            port: 1433,
            server: "node2.example".into(),
            database: "db2".into()
        }
    );
    assert_eq!(
        parse(env_change(16, &[0], &[0]), &mut state),
        EnvChange::Other { kind: 16 }
    );
}

#[test]
fn feature_ext_ack_sets_stream_options() {
    let mut state = StreamState::new();
    // DATACLASSIFICATION version 2 enabled
    next_token(&[0xAE, 0x09, 2, 0, 0, 0, 2, 1, 0xFF], &mut state)
        .unwrap()
        .unwrap();
    assert_eq!(state.data_classification_version, 2);
    let mut v2 = vec![0xA3, 0, 0, 0, 0];
    v2.extend(10i32.to_le_bytes());
    v2.extend([1, 0, 1, 0, 0, 0, 0, 0]);
    v2.extend(20i32.to_le_bytes());
    assert_eq!(
        next_token(&v2, &mut state).unwrap(),
        Some((Token::DataClassification, v2.len()))
    );
    // COLUMNENCRYPTION acknowledged: COLMETADATA would carry a CEK table
    next_token(&[0xAE, 0x04, 1, 0, 0, 0, 1, 0xFF], &mut state)
        .unwrap()
        .unwrap();
    assert!(next_token(&sample_metadata_token(), &mut state).is_err());
}

#[test]
fn other_length_prefixed_tokens() {
    let mut state = StreamState::new();
    for (bytes, want) in [
        (with_ushort_len(0xA5, &[1, 1, 0]), Token::ColInfo),
        (with_ushort_len(0xA4, &us_varchar("t")), Token::TabName),
        (with_ushort_len(0xED, &[1, 2, 3]), Token::Sspi),
        (vec![0xEE, 4, 0, 0, 0, 0, 0, 0, 0], Token::FedAuthInfo),
        (vec![0xE4, 5, 0, 0, 0, 1, 0, 0, 0, 0], Token::SessionState),
        (vec![0x79, 0xFF, 0xFF, 0xFF, 0xFF], Token::ReturnStatus(-1)),
    ] {
        assert_eq!(
            next_token(&bytes, &mut state).unwrap(),
            Some((want, bytes.len()))
        );
        assert_eq!(
            next_token(&bytes[..bytes.len() - 1], &mut state).unwrap(),
            None
        );
    }
}

#[test]
fn return_value_token() {
    let (bytes, expected) = sample_stream();
    let start: usize = expected[..9].iter().map(|e| e.1).sum();
    let token = &bytes[start..start + expected[9].1];
    let (parsed, len) = next_token(token, &mut StreamState::new()).unwrap().unwrap();
    assert_eq!(len, token.len());
    let Token::ReturnValue(rv) = parsed else {
        panic!()
    };
    assert_eq!((rv.ordinal, rv.name.as_str(), rv.status), (1, "@out", 1));
    assert_eq!(rv.type_info.data_type, DataType::NVarChar);
    assert_eq!(rv.value.end, token.len());
}

#[test]
fn unsupported_and_unknown_tokens_are_errors() {
    let mut state = StreamState::new();
    for b in [0x88, 0xD3, 0x78, 0x01, 0x00, 0x42, 0xF0] {
        let err = next_token(&[b, 0, 0, 0], &mut state).unwrap_err();
        assert!(matches!(err, CodecError::Invalid(_)), "0x{b:02X}: {err}");
    }
    assert!(
        next_token(&[0xD1, 0], &mut state).is_err(),
        "row with no metadata"
    );
}

#[test]
fn malformed_tokens_are_errors_not_panics() {
    let mut state = StreamState::new();
    // ENVCHANGE whose declared length ends inside its value
    let bad_env = with_ushort_len(0xE3, &[1, 5, b'a', 0]);
    assert!(matches!(
        next_token(&bad_env, &mut state),
        Err(CodecError::Truncated(_))
    ));
    // packet size that is not a number
    let bad_size = env_change(4, &b_varchar("lots"), &[0]);
    assert!(next_token(&bad_size, &mut state).is_err());
    // PROMOTE TRANSACTION is refused rather than misframed
    assert!(next_token(&env_change(15, &[0], &[]), &mut state).is_err());
    // a variant whose property count runs past its length
    let mut meta = colmetadata(&[column(1, &[0x62, 0x50, 0x1F, 0, 0], None, "v")]);
    meta.extend([0xD1, 3, 0, 0, 0, 0xE7, 9, 0]);
    let err = parse_all_result(&meta);
    assert!(matches!(err, Err(CodecError::Invalid(_))), "{err:?}");
}

fn parse_all_result(bytes: &[u8]) -> crate::codec::Result<()> {
    let mut state = StreamState::new();
    let mut pos = 0;
    while pos < bytes.len() {
        match next_token(&bytes[pos..], &mut state)? {
            Some((_, len)) => pos += len,
            None => return Err(CodecError::Truncated("test stream")),
        }
    }
    Ok(())
}

#[test]
fn lengths_are_bounded_before_waiting_for_them() {
    let mut state = StreamState::with_max_token_len(1024);
    // FEDAUTHINFO announcing 4 GiB
    let err = next_token(&[0xEE, 0xFF, 0xFF, 0xFF, 0xFF], &mut state).unwrap_err();
    assert!(matches!(err, CodecError::TooLong { .. }), "{err}");
    // a PLP chunk announcing more than the bound
    next_token(&sample_metadata_token(), &mut state)
        .unwrap()
        .unwrap();
    let mut row = vec![0xD1, 1, 0, 0, 0, 0, 0];
    row.extend(u64::MAX.wrapping_sub(1).to_le_bytes());
    row.extend(0x7FFF_0000u32.to_le_bytes());
    let err = next_token(&row, &mut state).unwrap_err();
    assert!(matches!(err, CodecError::TooLong { .. }), "{err}");
    // a FEATUREEXTACK option announcing more than the bound
    let err = next_token(&[0xAE, 1, 0, 0, 0, 1], &mut state).unwrap_err();
    assert!(matches!(err, CodecError::TooLong { .. }), "{err}");
    // any token still incomplete at the bound
    let mut many_columns = vec![0x81, 0xFF, 0x0F];
    many_columns.extend([0u8, 0, 0, 0, 0, 0, 0x38, 0].iter().cycle().take(1100));
    let err = next_token(&many_columns, &mut state).unwrap_err();
    assert!(matches!(err, CodecError::TooLong { .. }), "{err}");
}

#[test]
fn a_large_column_count_allocates_nothing_until_it_arrives() {
    let mut state = StreamState::new();
    // 65534 columns announced in 3 bytes: need more, and nothing is built yet
    assert_eq!(next_token(&[0x81, 0xFE, 0xFF], &mut state).unwrap(), None);
}

/// Deterministic pseudo-random bytes, for the no-panic sweep.
fn lcg(seed: &mut u64) -> u8 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*seed >> 56) as u8
}

#[test]
fn random_and_mutated_input_never_panics() {
    let (sample, _) = sample_stream();
    let mut seed = 7;
    for round in 0..3000 {
        let mut bytes = if round % 2 == 0 {
            sample.clone()
        } else {
            (0..lcg(&mut seed) as usize * 2)
                .map(|_| lcg(&mut seed))
                .collect()
        };
        for _ in 0..=(round % 5) {
            if !bytes.is_empty() {
                let i = (usize::from(lcg(&mut seed)) * 131 + round) % bytes.len();
                bytes[i] = lcg(&mut seed);
            }
        }
        let mut state = StreamState::with_max_token_len(1 << 16);
        let mut pos = 0;
        while let Ok(Some((_, len))) = next_token(&bytes[pos..], &mut state) {
            pos += len;
        }
    }
}

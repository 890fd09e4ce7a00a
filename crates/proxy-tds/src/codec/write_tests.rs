use super::*;
use crate::codec::fixtures;
use crate::codec::messages::feature;
use crate::codec::tokens::{StreamState, Token, next_token};
use crate::codec::types::Collation;

fn read_back(bytes: &[u8]) -> Vec<Token> {
    let mut state = StreamState::new();
    let mut pos = 0;
    let mut tokens = Vec::new();
    while pos < bytes.len() {
        let (token, len) = next_token(&bytes[pos..], &mut state)
            .unwrap()
            .expect("complete");
        tokens.push(token);
        pos += len;
    }
    tokens
}

#[test]
fn error_matches_the_spec_layout() {
    let mut out = BytesMut::new();
    let mut msg = ServerMessage::new(229, 14, "denied");
    msg.server = "gw".into();
    msg.line = 7;
    write_error(&mut out, &msg).unwrap();
    assert_eq!(
        &out[..],
        &fixtures::message(0xAA, 229, 14, "denied", "gw")[..]
    );
    assert_eq!(read_back(&out), [Token::Error(msg)]);
}

#[test]
fn refusal_is_an_error_then_a_final_done_with_done_error() {
    let mut out = BytesMut::new();
    let msg = ServerMessage::new(
        229,
        14,
        "The SELECT permission was denied on the object 'cards'.",
    );
    write_refusal(&mut out, &msg).unwrap();
    let tokens = read_back(&out);
    assert_eq!(tokens[0], Token::Error(msg));
    let done = tokens[1].done().unwrap();
    assert!(done.is_error() && tokens[1].ends_response());
    assert_eq!(done.status, done_status::ERROR);
}

#[test]
fn info_and_done_kinds() {
    let mut out = BytesMut::new();
    write_info(&mut out, &ServerMessage::new(5701, 0, "ctx")).unwrap();
    let d = Done {
        status: done_status::MORE | done_status::COUNT,
        cur_cmd: 0xC1,
        row_count: 3,
    };
    write_done(&mut out, DoneKind::DoneInProc, &d);
    write_done(&mut out, DoneKind::DoneProc, &d);
    write_done(
        &mut out,
        DoneKind::Done,
        &Done {
            status: done_status::ATTN,
            cur_cmd: 0,
            row_count: 0,
        },
    );
    let tokens = read_back(&out);
    assert!(matches!(&tokens[0], Token::Info(m) if m.number == 5701));
    assert_eq!(tokens[1], Token::DoneInProc(d));
    assert_eq!(tokens[2], Token::DoneProc(d));
    assert!(tokens[3].done().unwrap().is_attention_ack());
    assert_eq!(
        &out[out.len() - 13..],
        &fixtures::done(0xFD, 0x20, 0, 0)[..]
    );
}

#[test]
fn a_gateway_login_response_reads_back() {
    let mut out = BytesMut::new();
    let ack = LoginAck {
        interface: INTERFACE_TSQL,
        tds_version: TDS_7_4,
        prog_name: "Microsoft SQL Server".into(),
        prog_version: [16, 0, 0x10, 0x2E],
    };
    write_login_ack(&mut out, &ack).unwrap();
    assert_eq!(&out[..], &fixtures::login_ack("Microsoft SQL Server")[..]);
    let changes = [
        EnvChange::Database {
            new: "app".into(),
            old: "master".into(),
        },
        EnvChange::Language {
            new: "us_english".into(),
            old: String::new(),
        },
        EnvChange::PacketSize {
            new: 8000,
            old: Some(4096),
        },
        EnvChange::PacketSize {
            new: 4096,
            old: None,
        },
        EnvChange::Collation {
            new: Some(Collation(fixtures::LATIN1)),
            old: None,
        },
        EnvChange::BeginTransaction { descriptor: 0x1122 },
        EnvChange::CommitTransaction { descriptor: 0x1122 },
        EnvChange::RollbackTransaction { descriptor: 7 },
        EnvChange::ResetConnectionAck,
        EnvChange::Routing {
            protocol: 0,
            port: 1433,
            server: "n2".into(),
        },
        EnvChange::EnhancedRouting {
            protocol: 0,
            port: 1433,
            server: "n2".into(),
            database: "d".into(),
        },
    ];
    for change in &changes {
        write_env_change(&mut out, change).unwrap();
    }
    write_feature_ext_ack(
        &mut out,
        &[FeatureAck::fedauth(), FeatureAck::utf8_support(true)],
    )
    .unwrap();
    write_done(
        &mut out,
        DoneKind::Done,
        &Done {
            status: 0,
            cur_cmd: 0,
            row_count: 0,
        },
    );
    let tokens = read_back(&out);
    assert_eq!(tokens[0], Token::LoginAck(ack));
    for (token, change) in tokens[1..].iter().zip(&changes) {
        assert_eq!(token, &Token::EnvChange(change.clone()));
    }
    let Token::FeatureExtAck(acks) = &tokens[changes.len() + 1] else {
        panic!()
    };
    assert_eq!(
        acks[0],
        FeatureAck {
            id: feature::FEDAUTH,
            data: vec![]
        }
    );
    assert_eq!(
        acks[1],
        FeatureAck {
            id: feature::UTF8_SUPPORT,
            data: vec![1]
        }
    );
    assert!(tokens.last().unwrap().ends_response());
}

#[test]
fn envchange_bytes_match_the_spec_layout() {
    let mut out = BytesMut::new();
    write_env_change(
        &mut out,
        &EnvChange::Database {
            new: "master".into(),
            old: String::new(),
        },
    )
    .unwrap();
    let expected =
        fixtures::env_change(1, &fixtures::b_varchar("master"), &fixtures::b_varchar(""));
    assert_eq!(&out[..], &expected[..]);
    out.clear();
    write_env_change(&mut out, &EnvChange::ResetConnectionAck).unwrap();
    assert_eq!(&out[..], [0xE3, 3, 0, 18, 0, 0]);
}

#[test]
fn oversized_fields_are_refused_and_nothing_is_written() {
    let mut out = BytesMut::new();
    let mut msg = ServerMessage::new(1, 16, "x");
    msg.server = "s".repeat(256);
    assert!(matches!(
        write_error(&mut out, &msg),
        Err(CodecError::TooLong { .. })
    ));
    let msg = ServerMessage::new(1, 16, "m".repeat(40_000));
    assert!(matches!(
        write_error(&mut out, &msg),
        Err(CodecError::TooLong { .. })
    ));
    let ack = LoginAck {
        interface: 1,
        tds_version: TDS_7_4,
        prog_name: "p".repeat(300),
        prog_version: [0; 4],
    };
    assert!(write_login_ack(&mut out, &ack).is_err());
    let db = EnvChange::Database {
        new: "d".repeat(256),
        old: String::new(),
    };
    assert!(write_env_change(&mut out, &db).is_err());
    assert!(write_env_change(&mut out, &EnvChange::Other { kind: 5 }).is_err());
    assert!(
        write_feature_ext_ack(
            &mut out,
            &[FeatureAck {
                id: 0xFF,
                data: vec![]
            }]
        )
        .is_err()
    );
    assert!(out.is_empty());
}

#[test]
fn non_bmp_text_counts_utf16_units() {
    let mut out = BytesMut::new();
    let msg = ServerMessage::new(50000, 16, "denied \u{1F512}");
    write_error(&mut out, &msg).unwrap();
    assert_eq!(read_back(&out), [Token::Error(msg)]);
}

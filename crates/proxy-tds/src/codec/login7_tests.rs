use super::*;
use crate::codec::fedauth::{LIBRARY_MSAL, LIBRARY_SECURITY_TOKEN};

fn sample() -> Login7 {
    Login7 {
        tds_version: 0x7400_0004,
        packet_size: 4096,
        client_pid: 42,
        option_flags1: 0xE0,
        option_flags2: 0x03,
        host_name: "ci-runner".into(),
        user_name: "portcullis_app".into(),
        password: "s3cret-é".into(),
        app_name: "pytds".into(),
        server_name: "sql.example.net".into(),
        library: "Portcullis".into(),
        language: "us_english".into(),
        database: "sales".into(),
        ..Login7::default()
    }
}

#[test]
fn round_trips_with_the_password_obfuscated_on_the_wire() {
    let l = sample();
    let wire = l.encode().unwrap();
    let clear = text::encode("s3cret");
    assert!(
        !wire.windows(clear.len()).any(|w| w == clear.as_slice()),
        "the password is not in clear"
    );
    assert_eq!(Login7::parse(&wire).unwrap(), l);
    assert_eq!(unscramble(scramble(0x3c)), 0x3c);
}

#[test]
fn a_fedauth_security_token_is_read_from_the_feature_extension() {
    let mut l = sample();
    l.password.clear();
    let mut wire = l.encode().unwrap();
    // Point the extension slot at a DWORD that points at the FeatureExt block.
    let ptr_at = wire.len();
    let feat_at = ptr_at + 4;
    wire.extend_from_slice(&(feat_at as u32).to_le_bytes());
    let token = "eyJhbGciOi.payload.sig";
    let tok = text::encode(token);
    wire.push(FEATURE_FEDAUTH);
    wire.extend_from_slice(&((1 + 4 + tok.len()) as u32).to_le_bytes());
    wire.push(LIBRARY_SECURITY_TOKEN << 1 | 1);
    wire.extend_from_slice(&(tok.len() as u32).to_le_bytes());
    wire.extend_from_slice(&tok);
    wire.push(0x0A); // UTF8_SUPPORT
    wire.extend_from_slice(&1u32.to_le_bytes());
    wire.push(1);
    wire.push(FEATURE_TERMINATOR);
    wire[36 + 20..36 + 22].copy_from_slice(&(ptr_at as u16).to_le_bytes());
    wire[36 + 22..36 + 24].copy_from_slice(&4u16.to_le_bytes());
    wire[27] |= EXTENSION;
    let len = wire.len() as u32;
    wire[..4].copy_from_slice(&len.to_le_bytes());
    let back = Login7::parse(&wire).unwrap();
    assert_eq!(back.token.as_deref(), Some(token));
    assert_eq!(back.features, vec![(0x0A, vec![1])]);
    assert!(back.has_features());
    // What the gateway sends on carries none of it.
    let ours = Login7::parse(&back.encode().unwrap()).unwrap();
    assert!(ours.token.is_none() && !ours.has_features());
}

#[test]
fn bounds_and_bad_offsets_are_errors() {
    let wire = sample().encode().unwrap();
    assert!(Login7::parse(&wire[..50]).is_err());
    let mut bad = wire.clone();
    bad[36 + 32..36 + 34].copy_from_slice(&60000u16.to_le_bytes());
    assert!(Login7::parse(&bad).is_err(), "database offset out of range");
    let mut long = wire.clone();
    long[46..48].copy_from_slice(&200u16.to_le_bytes());
    assert!(matches!(
        Login7::parse(&long),
        Err(CodecError::TooLong { .. })
    ));
    let mut l = sample();
    l.password = "x".repeat(129);
    assert!(l.encode().is_err());
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A LOGIN7 built by hand, field by field as the specification lays it out (independent of
/// `encode`), as FreeTDS sends one: SQL login, a FeatureExt block with `features`.
fn hand_built(features: &[u8]) -> Vec<u8> {
    let mut fixed = vec![0u8; 4];
    fixed.extend_from_slice(&0x7400_0004u32.to_le_bytes());
    fixed.extend_from_slice(&4096u32.to_le_bytes());
    fixed.extend_from_slice(&0x0700_0000u32.to_le_bytes());
    fixed.extend_from_slice(&4242u32.to_le_bytes());
    fixed.extend_from_slice(&0u32.to_le_bytes());
    fixed.extend_from_slice(&[0xE0, 0x03, 0x00, EXTENSION]);
    fixed.extend_from_slice(&(-480i32).to_le_bytes());
    fixed.extend_from_slice(&0x0409u32.to_le_bytes());
    let mut var: Vec<u8> = Vec::new();
    let pair = |fixed: &mut Vec<u8>, var: &mut Vec<u8>, data: &[u8], len: u16| {
        let off = u16::try_from(FIXED + var.len()).unwrap();
        fixed.extend_from_slice(&off.to_le_bytes());
        fixed.extend_from_slice(&len.to_le_bytes());
        var.extend_from_slice(data);
    };
    let text = |s: &str| (utf16(s), u16::try_from(s.encode_utf16().count()).unwrap());
    for s in ["WS01", "alice"] {
        let (b, n) = text(s);
        pair(&mut fixed, &mut var, &b, n);
    }
    let mut pw = utf16("s3cr€t");
    for b in &mut pw {
        *b = b.rotate_right(4) ^ 0xA5;
    }
    pair(&mut fixed, &mut var, &pw, 6);
    for s in ["tsql", "db.example.net"] {
        let (b, n) = text(s);
        pair(&mut fixed, &mut var, &b, n);
    }
    pair(&mut fixed, &mut var, &[0, 0, 0, 0], 4);
    let ext_at = var.len() - 4;
    for s in ["FreeTDS", "", "sales"] {
        let (b, n) = text(s);
        pair(&mut fixed, &mut var, &b, n);
    }
    fixed.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    for _ in 0..3 {
        pair(&mut fixed, &mut var, &[], 0);
    }
    fixed.extend_from_slice(&0u32.to_le_bytes());
    assert_eq!(fixed.len(), FIXED);
    let feature_at = u32::try_from(FIXED + var.len()).unwrap();
    var[ext_at..ext_at + 4].copy_from_slice(&feature_at.to_le_bytes());
    var.extend_from_slice(features);
    var.push(FEATURE_TERMINATOR);
    let mut out = fixed;
    out.extend(var);
    let len = u32::try_from(out.len()).unwrap();
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

#[test]
fn a_hand_built_login_is_read_field_by_field() {
    let l = Login7::parse(&hand_built(&[0x0A, 0, 0, 0, 0, 0x09, 1, 0, 0, 0, 2])).unwrap();
    assert_eq!(l.tds_version, 0x7400_0004);
    assert_eq!((l.packet_size, l.client_pid), (4096, 4242));
    assert_eq!(l.client_time_zone, -480);
    assert_eq!(l.host_name, "WS01");
    assert_eq!(l.user_name, "alice");
    assert_eq!(l.password, "s3cr€t");
    assert_eq!(l.app_name, "tsql");
    assert_eq!(l.server_name, "db.example.net");
    assert_eq!(l.library, "FreeTDS");
    assert_eq!(l.database, "sales");
    assert_eq!(l.client_id, [1, 2, 3, 4, 5, 6]);
    assert_eq!(l.features, vec![(0x0A, vec![]), (0x09, vec![2])]);
    assert!(l.token.is_none() && !l.sspi && l.has_features());
}

#[test]
fn a_fedauth_token_with_a_nonce_is_read_and_msal_is_refused_with_a_reason() {
    let tok = utf16("eyJ.x.y");
    let mut data = vec![LIBRARY_SECURITY_TOKEN << 1 | 1];
    data.extend_from_slice(&u32::try_from(tok.len()).unwrap().to_le_bytes());
    data.extend_from_slice(&tok);
    data.extend_from_slice(&[7; 32]);
    let mut feature = vec![FEATURE_FEDAUTH];
    feature.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    feature.extend_from_slice(&data);
    let l = Login7::parse(&hand_built(&feature)).unwrap();
    assert_eq!(l.token.as_deref(), Some("eyJ.x.y"));
    // Bytes after the token that are not a nonce.
    let mut bad = feature.clone();
    bad[1] += 1;
    bad.push(0);
    assert!(Login7::parse(&hand_built(&bad)).is_err());
    let msal = [FEATURE_FEDAUTH, 2, 0, 0, 0, LIBRARY_MSAL << 1, 0x03];
    let err = Login7::parse(&hand_built(&msal)).unwrap_err();
    assert!(
        err.to_string().contains("pass the access token itself"),
        "{err}"
    );
}

#[test]
fn a_feature_sent_twice_is_refused() {
    let twice = [0x0A, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0];
    assert!(Login7::parse(&hand_built(&twice)).is_err());
    let tok = [LIBRARY_SECURITY_TOKEN << 1, 2, 0, 0, 0, b'a', 0];
    let mut fed = vec![FEATURE_FEDAUTH, 7, 0, 0, 0];
    fed.extend_from_slice(&tok);
    let both = [fed.clone(), fed].concat();
    assert!(Login7::parse(&hand_built(&both)).is_err());
}

/// The gateway's own token login reads back as a FEDAUTH security token, with no
/// password and the other fields unchanged.
#[test]
fn a_token_login_carries_the_token_in_fedauth() {
    let mut l = sample();
    l.password = String::new();
    l.user_name = String::new();
    let token = "eyJ0eXAiOiJKV1QifQ.e30.c2ln";
    let wire = l.encode_with_token(token, true, Some(&[7; 32])).unwrap();
    let back = Login7::parse(&wire).unwrap();
    assert_eq!(back.token.as_deref(), Some(token));
    assert_eq!(back.database, l.database);
    assert!(back.password.is_empty() && back.user_name.is_empty());
    let huge = "x".repeat(MAX_TOKEN);
    assert!(l.encode_with_token(&huge, true, None).is_err());
}

/// A LOGIN7 in the 86-byte TDS 7.1 layout (FreeTDS 1.5 sends it at TDS 7.4): its variable
/// part starts where ibChangePassword would be, and it reads as the 94-byte layout does.
#[test]
fn the_tds71_fixed_layout_is_read_by_its_offsets() {
    let l = sample();
    let wire = l.encode().unwrap();
    let mut short = wire[..FIXED_71].to_vec();
    short.extend_from_slice(&wire[FIXED..]);
    let len = short.len() as u32;
    short[..4].copy_from_slice(&len.to_le_bytes());
    for slot in (36..36 + 36).step_by(4).chain([78, 82]) {
        let off = u16::from_le_bytes([short[slot], short[slot + 1]]);
        short[slot..slot + 2].copy_from_slice(&(off - 8).to_le_bytes());
    }
    assert_eq!(Login7::parse(&short).unwrap(), l);
    let mut inside = short.clone();
    inside[36..38].copy_from_slice(&80u16.to_le_bytes());
    assert!(
        Login7::parse(&inside).is_err(),
        "an offset inside the 7.1 fixed part"
    );
}

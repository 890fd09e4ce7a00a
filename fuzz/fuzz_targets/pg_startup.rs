//! Startup-phase packets from arbitrary bytes: errors are fine, panics are not, and whatever
//! decodes as a StartupMessage or CancelRequest must re-encode to the same bytes.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proxy_postgres::codec::{self, StartupPacket};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let before = buf.len();
    let Ok(Some(packet)) = codec::next_startup(&mut buf) else {
        return;
    };
    let consumed = &data[..before - buf.len()];
    assert!(consumed.len() <= codec::MAX_STARTUP);
    let mut out = BytesMut::new();
    match &packet {
        StartupPacket::SslRequest => codec::put_ssl_request(&mut out),
        StartupPacket::GssEncRequest => return,
        StartupPacket::Cancel { pid, key } => codec::put_cancel_request(&mut out, *pid, key),
        StartupPacket::Startup { version, params } => {
            if *version != codec::PROTOCOL_3_0 {
                return;
            }
            let params: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            codec::put_startup(&mut out, &params);
        }
    }
    assert_eq!(
        &out[..],
        consumed,
        "startup packet re-encodes to the same bytes"
    );
});

//! Frames any byte stream, in small and large chunks, and runs every frontend and backend
//! decoder on every frame body. The decoders must return errors, never panic, and the framer
//! must only hand out frames whose raw bytes are a prefix of what it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proxy_postgres::codec::{self, Frame};

/// Small enough that the fuzzer reaches the TooLong path with short inputs.
const MAX: usize = 4096;

fn decode_all(frame: &Frame) {
    let body = frame.body();
    assert_eq!(frame.raw.len(), body.len() + codec::HEADER_LEN);
    assert_eq!(frame.body_bytes().as_ref(), body);
    // Frontend views.
    let _ = codec::parse_query(body);
    if let Ok(parse) = codec::parse_parse(body) {
        let mut out = BytesMut::new();
        codec::put_parse(&mut out, &parse).expect("decoded Parse re-encodes");
        assert_eq!(
            &out[codec::HEADER_LEN..],
            body,
            "Parse re-encodes to the same bytes"
        );
    }
    if let Ok(bind) = codec::parse_bind(body) {
        let mut out = BytesMut::new();
        codec::put_bind(&mut out, &bind).expect("decoded Bind re-encodes");
        assert_eq!(
            &out[codec::HEADER_LEN..],
            body,
            "Bind re-encodes to the same bytes"
        );
    }
    let _ = codec::parse_describe(body);
    let _ = codec::parse_close(body);
    let _ = codec::parse_execute(body);
    let _ = codec::parse_password(body);
    // Backend views.
    let _ = codec::parse_auth_request(body);
    let _ = codec::parse_parameter_status(body);
    let _ = codec::parse_backend_key_data(body);
    let _ = codec::parse_ready_for_query(body);
    if let Ok(tag) = codec::parse_command_complete(body) {
        let _ = codec::rows_from_tag(tag);
    }
    let _ = codec::parse_error_fields(body);
    let _ = codec::parse_row_description(body);
    if let Ok(values) = codec::parse_data_row(body) {
        let mut out = BytesMut::new();
        codec::put_data_row(&mut out, &values).expect("decoded DataRow re-encodes");
        assert_eq!(
            &out[codec::HEADER_LEN..],
            body,
            "DataRow re-encodes to the same bytes"
        );
    }
}

fn frame_all(data: &[u8], chunk: usize) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match codec::next_frame(&mut buf, MAX) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let (chunk, data) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c), rest),
        None => return,
    };
    let whole = frame_all(data, data.len());
    let chunked = frame_all(data, chunk);
    // Chunking never changes what is framed.
    assert_eq!(whole, chunked);
    let mut offset = 0;
    for frame in &whole {
        assert_eq!(&data[offset..offset + frame.raw.len()], &frame.raw[..]);
        offset += frame.raw.len();
        decode_all(frame);
    }
});

use flate2::{Compress, Compression, FlushCompress};

use super::*;

/// One direction's writer: header blocks share one compressor primed with the dictionary.
struct Writer {
    deflate: Compress,
}

impl Writer {
    fn new() -> Writer {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate.set_dictionary(DICTIONARY).expect("dictionary");
        Writer { deflate }
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            for s in [k, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        self.deflate
            .compress_vec(&raw, &mut out, FlushCompress::Sync)
            .expect("compress");
        out
    }

    fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
        let mut f = (0x8003_0000u32 | u32::from(kind)).to_be_bytes().to_vec();
        f.extend_from_slice(&(u32::from(flags) << 24 | body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn syn(&mut self, stream: u32, kind: &str) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(self.block(&[("streamtype", kind), ("port", "80")]));
        Writer::control(SYN_STREAM, 0, &body)
    }

    fn reply(&mut self, stream: u32) -> Vec<u8> {
        let mut body = stream.to_be_bytes().to_vec();
        body.extend(self.block(&[]));
        Writer::control(SYN_REPLY, 0, &body)
    }
}

fn data(stream: u32, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = stream.to_be_bytes().to_vec();
    f.extend_from_slice(&(u32::from(fin) << 24 | payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An exec as kubectl 1.27 does it with `-it`: the client's and the server's bytes.
fn exec_session() -> (Vec<u8>, Vec<u8>) {
    let (mut c, mut t) = (Writer::new(), Writer::new());
    let mut client = Vec::new();
    for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
        client.extend(c.syn(id, kind));
    }
    client.extend(Writer::control(6, 0, &1u32.to_be_bytes())); // a ping
    client.extend(data(7, false, b"{\"Width\":100,\"Height\":30}\n"));
    client.extend(data(3, false, b"hostname\r"));
    client.extend(data(7, false, b"{\"Width\":120,"));
    client.extend(data(7, false, b"\"Height\":40}\n"));
    client.extend(data(3, true, b""));
    let mut target = Vec::new();
    for id in [1, 3, 5, 7] {
        target.extend(t.reply(id));
    }
    target.extend(data(5, false, b"$ hostname\r\nweb-0\r\n"));
    target.extend(data(5, true, b""));
    target.extend(data(1, false, b"{\"status\":\"Fail"));
    target.extend(data(1, true, b"ure\"}"));
    (client, target)
}

type Seen = Vec<(u8, Vec<u8>, bool)>;

/// Events of both directions, each direction fed in `chunk`-byte pieces: data pieces joined
/// per channel, control messages marked `true`.
fn channels(client: &[u8], target: &[u8], chunk: usize) -> (Seen, Seen) {
    let mut ch = Channels::default();
    let (mut from_client, mut from_target): (Seen, Seen) = (Vec::new(), Vec::new());
    fn push(seen: &mut Seen, e: Event<'_>) {
        match e {
            Event::Data { channel, data } => match seen.last_mut() {
                Some((c, buf, false)) if *c == channel => buf.extend_from_slice(data),
                _ => seen.push((channel, data.to_vec(), false)),
            },
            Event::Control { channel, message } => seen.push((channel, message, true)),
        }
    }
    for piece in client.chunks(chunk) {
        ch.client(piece, &mut |e| push(&mut from_client, e))
            .expect("client side");
    }
    for piece in target.chunks(chunk) {
        ch.target(piece, &mut |e| push(&mut from_target, e))
            .expect("target side");
    }
    (from_client, from_target)
}

#[test]
fn an_exec_reads_the_same_in_any_pieces() {
    let (client, target) = exec_session();
    let want_client: Seen = vec![
        (4, b"{\"Width\":100,\"Height\":30}\n".to_vec(), true),
        (0, b"hostname\r".to_vec(), false),
        (4, b"{\"Width\":120,\"Height\":40}\n".to_vec(), true),
    ];
    let want_target: Seen = vec![
        (1, b"$ hostname\r\nweb-0\r\n".to_vec(), false),
        (3, b"{\"status\":\"Failure\"}".to_vec(), true),
    ];
    for chunk in [1, 2, 3, 7, 8, 9, 64, 1 << 20] {
        let (c, t) = channels(&client, &target, chunk);
        assert_eq!(c, want_client, "client side, pieces of {chunk}");
        assert_eq!(t, want_target, "target side, pieces of {chunk}");
    }
}

#[test]
fn frames_name_streams_and_their_ends() {
    let mut w = Writer::new();
    let mut bytes = w.syn(1, "data");
    bytes.extend(data(1, false, b"abc"));
    bytes.extend(Writer::control(RST_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 5]));
    let mut seen = Vec::new();
    Frames::default()
        .feed(&bytes, &mut |f| {
            seen.push(match f {
                Frame::Open { stream, kind } => format!("open {stream} {kind:?}"),
                Frame::Data { stream, data } => {
                    format!("data {stream} {}", String::from_utf8_lossy(data))
                }
                Frame::End { stream } => format!("end {stream}"),
            })
        })
        .expect("frames");
    assert_eq!(seen, ["open 1 Some(\"data\")", "data 1 abc", "end 1"]);
}

#[test]
fn what_cannot_be_followed_is_an_error() {
    let feed = |bytes: &[u8]| Frames::default().feed(bytes, &mut |_| {});
    // SPDY/2.
    let mut v2 = Writer::control(1, 0, &[0; 12]);
    v2[1] = 2;
    assert!(feed(&v2).unwrap_err().contains("version 2"));
    // A control frame over the bound: refused from its header, before its body arrives.
    let mut big = Writer::control(HEADERS, 0, &[]);
    big[5..8].copy_from_slice(&[0x10, 0, 0]);
    assert!(feed(&big).unwrap_err().contains("limit"));
    // A header block that is not zlib fails; one compressed without the dictionary reads.
    let mut junk = 1u32.to_be_bytes().to_vec();
    junk.extend_from_slice(&[0; 6]);
    junk.extend_from_slice(b"not zlib at all");
    assert!(feed(&Writer::control(SYN_STREAM, 0, &junk)).is_err());
    let mut plain = Compress::new(Compression::default(), true);
    let mut block = Vec::with_capacity(64);
    plain
        .compress_vec(&[0, 0, 0, 0], &mut block, FlushCompress::Sync)
        .expect("compress");
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend(block);
    assert!(feed(&Writer::control(SYN_REPLY, 0, &body)).is_ok());
    // A block that inflates past the bound (a small frame, a huge header).
    let mut w = Writer::new();
    let huge = "x".repeat(MAX_HEADER_BLOCK);
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend(w.block(&[("streamtype", &huge)]));
    assert!(body.len() < MAX_CONTROL_FRAME);
    assert!(
        feed(&Writer::control(HEADERS, 0, &body))
            .unwrap_err()
            .contains("beyond")
    );
    // A block claiming more pairs than it holds.
    let mut w = Writer::new();
    let mut raw = 1000u32.to_be_bytes().to_vec();
    raw.extend_from_slice(&[0, 0, 0, 1]);
    let mut block = Vec::with_capacity(64);
    w.deflate
        .compress_vec(&raw, &mut block, FlushCompress::Sync)
        .expect("compress");
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 6]);
    body.extend(block);
    assert!(
        feed(&Writer::control(SYN_STREAM, 0, &body))
            .unwrap_err()
            .contains("cut short")
    );
    // More streams than an exec opens.
    let mut w = Writer::new();
    let mut ch = Channels::default();
    let many: Vec<u8> = (0..=MAX_STREAMS as u32)
        .flat_map(|i| w.syn(2 * i + 1, "stdout"))
        .collect();
    assert!(
        ch.client(&many, &mut |_| {})
            .unwrap_err()
            .contains("streams")
    );
}

#[test]
fn a_status_without_its_end_is_still_read() {
    let mut ch = Channels::default();
    let mut c = Writer::new();
    ch.client(&c.syn(1, "error"), &mut |_| {}).expect("client");
    ch.target(&data(1, false, b"{\"status\":\"Success\"}"), &mut |_| {})
        .expect("target");
    assert_eq!(
        ch.unfinished_status().as_deref(),
        Some(&b"{\"status\":\"Success\"}"[..])
    );
}

#[test]
fn the_dictionary_is_the_one_kubectl_primes_with() {
    // The dictionary id a zlib stream carries is the dictionary's Adler-32: this one is the
    // id kubectl's header blocks name.
    let mut c = Compress::new(Compression::default(), true);
    let id = c.set_dictionary(DICTIONARY).expect("dictionary");
    assert_eq!(id, 0xe3c6_a7c2);
}

/// A client cannot make the recording read a stream differently from the API server:
/// streams relabelled, opened out of order or named twice, blocks with trailing bytes, and
/// messages too long to read whole all end the recording (and so the connection).
#[test]
fn a_client_cannot_relabel_or_hide_a_stream() {
    let client = |bytes: &[u8]| Channels::default().client(bytes, &mut |_| {});
    let mut w = Writer::new();
    let mut twice = w.syn(3, "stdin");
    twice.extend(w.syn(3, "bogus"));
    assert!(client(&twice).unwrap_err().contains("out of order"));
    let mut w = Writer::new();
    let mut backwards = w.syn(5, "stdout");
    backwards.extend(w.syn(3, "stdin"));
    assert!(client(&backwards).unwrap_err().contains("out of order"));

    let mut w = Writer::new();
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 6]);
    body.extend(w.block(&[("streamtype", "stdin"), ("streamtype", "bogus")]));
    let dup = Writer::control(SYN_STREAM, 0, &body);
    assert!(client(&dup).unwrap_err().contains("more than once"));

    let mut w = Writer::new();
    let mut raw = 0u32.to_be_bytes().to_vec();
    raw.extend_from_slice(b"\0\0\0\x0astreamtype\0\0\0\x05stdin");
    let mut block = Vec::with_capacity(128);
    w.deflate
        .compress_vec(&raw, &mut block, FlushCompress::Sync)
        .expect("compress");
    let mut body = 1u32.to_be_bytes().to_vec();
    body.extend(block);
    let trailing = Writer::control(SYN_REPLY, 0, &body);
    assert!(
        client(&trailing)
            .unwrap_err()
            .contains("more than its pairs")
    );

    let mut w = Writer::new();
    let mut long = w.syn(1, "resize");
    long.extend(data(1, false, &[b'{'; MAX_CONTROL_MESSAGE + 1]));
    assert!(client(&long).unwrap_err().contains("too long"));

    let mut ch = Channels::default();
    let mut c = Writer::new();
    ch.client(&c.syn(1, "error"), &mut |_| {}).expect("client");
    let big = data(1, false, &[b' '; MAX_CONTROL_MESSAGE + 1]);
    assert!(ch.target(&big, &mut |_| {}).unwrap_err().contains("status"));
}

/// Input the client sends on a stream it already ended is not run, so not recorded.
#[test]
fn data_after_a_streams_end_is_not_recorded() {
    let mut c = Writer::new();
    let mut bytes = c.syn(1, "stdin");
    bytes.extend(data(1, true, b"echo real\r"));
    bytes.extend(data(1, false, b"rm -rf /\r"));
    let mut seen = Vec::new();
    Channels::default()
        .client(&bytes, &mut |e| {
            if let Event::Data { data, .. } = e {
                seen.extend_from_slice(data);
            }
        })
        .expect("client");
    assert_eq!(seen, b"echo real\r");
}

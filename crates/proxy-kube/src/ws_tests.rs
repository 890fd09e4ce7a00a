use super::*;

/// A frame as a client (masked) or server sends it.
fn frame(opcode: u8, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// Messages by channel.
type Messages = Vec<(u8, Vec<u8>)>;

/// Data (consecutive pieces of a channel joined) and control messages of `stream` fed in
/// pieces of `chunk` bytes.
fn events(stream: &[u8], chunk: usize) -> (Messages, Messages) {
    let mut frames = Frames::default();
    let mut data: Messages = Vec::new();
    let mut control = Vec::new();
    for piece in stream.chunks(chunk) {
        frames
            .feed(piece, &mut |e| match e {
                Event::Data { channel, data: d } => match data.last_mut() {
                    Some((c, buf)) if *c == channel => buf.extend_from_slice(d),
                    _ => data.push((channel, d.to_vec())),
                },
                Event::Control { channel, message } => control.push((channel, message)),
            })
            .expect("frames");
    }
    (data, control)
}

#[test]
fn channels_are_read_whatever_the_chunking() {
    let big = vec![b'x'; 70_000];
    let mut stream = Vec::new();
    stream.extend(frame(2, true, b"\x01hello\r\n", None));
    stream.extend(frame(9, true, b"ping", None));
    stream.extend(frame(2, false, b"\x02err", None));
    stream.extend(frame(0, true, b"or", None));
    stream.extend(frame(2, true, &[&[1u8][..], &big].concat(), None));
    stream.extend(frame(
        2,
        true,
        br#"{"status":"Success"}"#
            .iter()
            .fold(vec![3u8], |mut v, b| {
                v.push(*b);
                v
            })
            .as_slice(),
        None,
    ));
    for chunk in [1, 3, 7, 1000, stream.len()] {
        let (data, control) = events(&stream, chunk);
        assert_eq!(data[0], (1, b"hello\r\n".to_vec()), "chunk {chunk}");
        assert_eq!(data[1], (2, b"error".to_vec()), "chunk {chunk}");
        assert_eq!(data[2], (1, big.clone()), "chunk {chunk}");
        assert_eq!(
            control,
            vec![(3, br#"{"status":"Success"}"#.to_vec())],
            "chunk {chunk}"
        );
    }
}

#[test]
fn client_frames_are_unmasked_and_resize_is_a_control_message() {
    let k = Some([0x11, 0x22, 0x33, 0x44]);
    let mut stream = Vec::new();
    stream.extend(frame(2, true, b"\x00echo hi\n", k));
    stream.extend(frame(2, true, b"\x04{\"Width\":120,\"Height\":40}", k));
    stream.extend(frame(2, true, &[255, 0], k));
    for chunk in [1, 5, stream.len()] {
        let (data, control) = events(&stream, chunk);
        assert_eq!(data[0], (0, b"echo hi\n".to_vec()));
        assert_eq!(control[0].0, 4);
        assert_eq!(control[0].1, br#"{"Width":120,"Height":40}"#.to_vec());
        assert_eq!(data.last(), Some(&(255, vec![0])));
    }
}

/// A status or resize message too long to keep ends the reading: the recording could not
/// say what it held.
#[test]
fn an_overlong_control_message_is_an_error() {
    let status = frame(
        2,
        true,
        &[&[3u8][..], &[b' '; MAX_CONTROL + 1][..]].concat(),
        None,
    );
    let mut frames = Frames::default();
    assert!(frames.feed(&status, &mut |_| {}).is_err());
    let fits = frame(
        2,
        true,
        &[&[3u8][..], &[b' '; MAX_CONTROL][..]].concat(),
        None,
    );
    assert!(Frames::default().feed(&fits, &mut |_| {}).is_ok());
}

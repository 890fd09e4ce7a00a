//! Reads any bytes as a TDS response token stream, whole and cut at a chosen point: the
//! reader must return errors, never panic, and never report a token longer than what it was
//! given; cutting the input never changes the tokens read before the cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_tds::codec::tokens::{StreamState, next_token};

/// The (kind, length) of each token read from `data` until it ends, errs or is cut short.
fn read(data: &[u8]) -> Vec<(String, usize)> {
    let mut state = StreamState::new();
    let mut at = 0;
    let mut out = Vec::new();
    while at < data.len() {
        match next_token(&data[at..], &mut state) {
            Ok(Some((token, used))) => {
                assert!(used > 0 && at + used <= data.len(), "a token within its input");
                let kind = format!("{token:?}");
                out.push((kind.chars().take(24).collect(), used));
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (cut, data) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c), rest),
        None => return,
    };
    let whole = read(data);
    let cut = cut.min(data.len());
    let part = read(&data[..cut]);
    // Every token read from the prefix is a token of the whole, in order.
    assert!(part.len() <= whole.len());
    assert_eq!(&whole[..part.len()], &part[..]);
});

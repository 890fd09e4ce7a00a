//! Property tests of the response token stream: arbitrary and mutated bytes never panic,
//! a token never needs more than the state's bound buffered before it is refused, and a
//! stream fed in pieces of any sizes is framed as it is whole.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::fixtures::{login_stream, sample_metadata_token, sample_stream};
use super::tokens::{StreamState, TokenKind, next_token};

const MAX_TOKEN: usize = 4096;

/// A token found: its kind, where it starts and its length.
type Framed = (TokenKind, usize, usize);

/// Reads every token of `bytes` fed in pieces of the sizes in `reads` (cycled), as the relay
/// does: after "need more", the same start is offered again with more bytes. Stops at the first
/// error. The (kind, start, len) of each token, and whether it ended in an error.
fn arriving(
    bytes: &[u8],
    reads: &[usize],
    state: &mut StreamState,
) -> Result<(Vec<Framed>, bool), TestCaseError> {
    let mut found = Vec::new();
    let (mut pos, mut fed) = (0, 0);
    for n in reads.iter().cycle() {
        fed = (fed + n).min(bytes.len());
        let buf = &bytes[..fed];
        loop {
            match next_token(&buf[pos..], state) {
                Ok(Some((token, len))) => {
                    prop_assert!(len > 0 && pos + len <= fed);
                    found.push((token.kind(), pos, len));
                    pos += len;
                }
                Ok(None) => {
                    // Waiting for more is only ever for less than the bound.
                    prop_assert!(fed - pos < state.max_token_len());
                    break;
                }
                Err(_) => return Ok((found, true)),
            }
        }
        if fed == bytes.len() {
            break;
        }
    }
    Ok((found, false))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_or_wait_past_the_bound(
        raw in vec(any::<u8>(), 0..6000),
        after_metadata in any::<bool>(),
        reads in vec(1usize..2000, 1..8),
    ) {
        let mut bytes = if after_metadata { sample_metadata_token() } else { Vec::new() };
        bytes.extend(raw);
        let mut state = StreamState::with_max_token_len(MAX_TOKEN);
        arriving(&bytes, &reads, &mut state)?;
    }

    #[test]
    fn mutated_streams_never_panic(
        edits in vec((any::<Index>(), any::<u8>()), 1..8),
        cut in any::<Index>(),
        reads in vec(1usize..300, 1..8),
    ) {
        let (mut bytes, _) = sample_stream();
        bytes.extend(login_stream());
        for (at, b) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let mut state = StreamState::with_max_token_len(MAX_TOKEN);
        arriving(&bytes, &reads, &mut state)?;
    }

    #[test]
    fn a_stream_in_pieces_of_any_sizes_is_framed_as_it_is_whole(
        reads in vec(1usize..400, 1..12),
    ) {
        let (mut bytes, _) = sample_stream();
        bytes.extend(login_stream());
        let (whole, failed) = arriving(&bytes, &[bytes.len()], &mut StreamState::new())?;
        prop_assert!(!failed);
        let (pieces, failed) = arriving(&bytes, &reads, &mut StreamState::new())?;
        prop_assert!(!failed);
        prop_assert_eq!(pieces, whole);
    }
}

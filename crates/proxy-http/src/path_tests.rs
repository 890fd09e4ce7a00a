use super::*;

fn n(p: &str) -> String {
    normalise(p)
        .map(|n| n.decoded)
        .unwrap_or_else(|e| format!("ERR {e:?}"))
}

#[test]
fn dot_segments_and_slashes_resolve() {
    assert_eq!(n("/a/b"), "/a/b");
    assert_eq!(n("/a/./b"), "/a/b");
    assert_eq!(n("/a/../b"), "/b");
    assert_eq!(n("/a/%2e%2e/b"), "/b");
    assert_eq!(n("/a/%2E%2e/b"), "/b");
    assert_eq!(n("/a/.%2e/b"), "/b");
    assert_eq!(n("//a///b"), "/a/b");
    assert_eq!(n("/../../etc"), "/etc");
    assert_eq!(n("/a/b/"), "/a/b/");
    assert_eq!(n("/a/b/.."), "/a/");
    assert_eq!(n("/"), "/");
    assert_eq!(n(""), "ERR NotAbsolute");
}

#[test]
fn ambiguous_spellings_are_refused() {
    assert_eq!(n("/a%2fb"), "ERR EncodedSeparator");
    assert_eq!(n("/a%2Fb"), "ERR EncodedSeparator");
    assert_eq!(n("/a%5cb"), "ERR EncodedSeparator");
    assert_eq!(n("/a\\..\\b"), "ERR EncodedSeparator");
    assert_eq!(n("/a%00b"), "ERR Control");
    assert_eq!(n("/a%0ab"), "ERR Control");
    assert_eq!(n("/a%2"), "ERR BadEscape");
    assert_eq!(n("/a%zz"), "ERR BadEscape");
    assert_eq!(n("/a/%252e%252e/b"), "ERR DoubleEncoded");
    assert_eq!(n("/a%ff"), "ERR NotUtf8");
    assert_eq!(n(&format!("/{}", "a".repeat(MAX_PATH))), "ERR TooLong");
}

#[test]
fn queries_are_decoded_and_sorted() {
    assert_eq!(
        normalise_query("restype=container&comp=%61cl").unwrap(),
        "comp=acl&restype=container"
    );
    assert_eq!(normalise_query("").unwrap(), "");
    assert_eq!(normalise_query("a&&b=1").unwrap(), "a&b=1");
    assert_eq!(normalise_query("x=%2F%3D").unwrap(), "x=/=");
    assert_eq!(normalise_query("x=%zz"), Err(PathError::BadEscape));
    assert_eq!(normalise_query("x=%0a"), Err(PathError::Control));
}

#[test]
fn the_encoded_form_round_trips() {
    let p = normalise("/subscriptions/s%201/x%3Fy/%C3%A9").unwrap();
    assert_eq!(p.decoded, "/subscriptions/s 1/x?y/é");
    assert_eq!(p.encoded, "/subscriptions/s%201/x%3Fy/%C3%A9");
    assert_eq!(normalise(&p.encoded).unwrap(), p);
}

proptest::proptest! {
    /// Normalising is idempotent on the encoded form, and the decoded form never holds a
    /// dot segment or an empty segment that a target could resolve differently.
    #[test]
    fn normalising_is_idempotent(raw in "/[a-z./%2eE5fF]{0,40}") {
        if let Ok(p) = normalise(&raw) {
            proptest::prop_assert_eq!(normalise(&p.encoded).unwrap(), p.clone());
            let inner = p.decoded.trim_end_matches('/');
            for seg in inner.split('/').skip(1) {
                proptest::prop_assert!(seg != "." && seg != ".." && !seg.is_empty(), "{}", p.decoded);
            }
        }
    }
}

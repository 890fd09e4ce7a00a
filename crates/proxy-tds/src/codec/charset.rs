//! Character values as text for the masking callback, and masked text back to value bytes.
//!
//! Code-page data (VARCHAR under a non-UTF-8 collation) is not translated: ASCII bytes read as
//! ASCII and every other byte `b` reads as the private-use character U+F700+`b`, which writes
//! back as the same byte. In the East Asian double-byte code pages both bytes of a two-byte
//! character are escaped, so a trail byte in the ASCII range never reads as ASCII. Detectors
//! that look for ASCII patterns (digits, e-mail addresses, ...) work, and text the callback
//! leaves alone round-trips byte for byte. A non-ASCII character a mask introduces is written
//! as `?` in such a column.

use super::tokenbuf::decode_ucs2_into;
use super::types::{CharEncoding, CodePage};

/// First private-use code point of the byte escapes (U+F700+`b` stands for byte `b`).
const ESCAPE_BASE: u32 = 0xF700;

/// `bytes` as text, borrowed when they already are valid text, else decoded into `scratch`.
/// UTF-16 and UTF-8 are decoded lossily (U+FFFD); that only shows if the callback changes the
/// value, since an unchanged value is never rewritten.
pub fn decode<'a>(bytes: &'a [u8], encoding: CharEncoding, scratch: &'a mut String) -> &'a str {
    scratch.clear();
    match encoding {
        CharEncoding::Utf16 => decode_ucs2_into(bytes, scratch),
        CharEncoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => return s,
            Err(_) => scratch.push_str(&String::from_utf8_lossy(bytes)),
        },
        CharEncoding::CodePage(cp) => {
            if bytes.is_ascii()
                && let Ok(s) = std::str::from_utf8(bytes)
            {
                return s;
            }
            let mut rest = bytes;
            while let Some((&b, tail)) = rest.split_first() {
                match tail.split_first() {
                    Some((&trail, tail)) if cp.is_lead(b) => {
                        scratch.push(escape(b));
                        scratch.push(escape(trail));
                        rest = tail;
                    }
                    _ => {
                        scratch.push(if b.is_ascii() {
                            char::from(b)
                        } else {
                            escape(b)
                        });
                        rest = tail;
                    }
                }
            }
        }
    }
    scratch
}

fn escape(b: u8) -> char {
    char::from_u32(ESCAPE_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn unescape(c: char) -> u8 {
    let code = u32::from(c);
    if c.is_ascii() {
        // ASCII fits a byte
        code as u8
    } else if (ESCAPE_BASE..=ESCAPE_BASE + 0xFF).contains(&code) {
        // in range, so the difference fits a byte
        (code - ESCAPE_BASE) as u8
    } else {
        b'?'
    }
}

/// Appends `text` encoded for a column in `encoding`.
pub fn encode(text: &str, encoding: CharEncoding, out: &mut Vec<u8>) {
    match encoding {
        CharEncoding::Utf16 => {
            for unit in text.encode_utf16() {
                out.extend_from_slice(&unit.to_le_bytes());
            }
        }
        CharEncoding::Utf8 => out.extend_from_slice(text.as_bytes()),
        CharEncoding::CodePage(_) => out.extend(text.chars().map(unescape)),
    }
}

/// Cuts encoded text to at most `max` bytes without splitting a character.
pub fn truncate(bytes: &mut Vec<u8>, max: usize, encoding: CharEncoding) {
    if bytes.len() <= max {
        return;
    }
    let cut = match encoding {
        CharEncoding::Utf16 => {
            let mut cut = max & !1;
            // do not keep the high half of a surrogate pair
            if cut >= 2 && matches!(bytes[cut - 1], 0xD8..=0xDB) {
                cut -= 2;
            }
            cut
        }
        CharEncoding::Utf8 => {
            let mut cut = max;
            while cut > 0 && bytes[cut] & 0xC0 == 0x80 {
                cut -= 1;
            }
            cut
        }
        CharEncoding::CodePage(CodePage::SingleByte) => max,
        CharEncoding::CodePage(cp) => {
            let mut at = 0;
            while at < max {
                let width = if cp.is_lead(bytes[at]) { 2 } else { 1 };
                if at + width > max {
                    break;
                }
                at += width;
            }
            at
        }
    };
    bytes.truncate(cut);
}

/// Blank-pads encoded text to exactly `len` bytes (CHAR/NCHAR values are full width).
pub fn pad(bytes: &mut Vec<u8>, len: usize, encoding: CharEncoding) {
    let space: &[u8] = if encoding == CharEncoding::Utf16 {
        &[b' ', 0]
    } else {
        b" "
    };
    while bytes.len() + space.len() <= len {
        bytes.extend_from_slice(space);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CP: CharEncoding = CharEncoding::CodePage(CodePage::SingleByte);

    #[test]
    fn ascii_code_page_text_is_borrowed() {
        let mut scratch = String::new();
        let bytes = b"card 4111";
        let s = decode(bytes, CP, &mut scratch);
        assert_eq!(s.as_ptr(), bytes.as_ptr(), "no copy for ASCII");
    }

    #[test]
    fn code_page_bytes_round_trip_through_escapes() {
        // "Café 4111" in Windows-1252, which is not valid UTF-8
        let bytes = b"Caf\xE9 4111";
        let mut scratch = String::new();
        let text = decode(bytes, CP, &mut scratch).to_owned();
        assert!(text.starts_with("Caf") && text.ends_with(" 4111"));
        let masked = text.replace("4111", "****");
        let mut out = Vec::new();
        encode(&masked, CP, &mut out);
        assert_eq!(out, b"Caf\xE9 ****");
        // bytes that happen to be valid UTF-8 are still code page bytes
        let mut scratch = String::new();
        assert_eq!(decode("é".as_bytes(), CP, &mut scratch).chars().count(), 2);
    }

    #[test]
    fn double_byte_trail_bytes_do_not_read_as_ascii() {
        // Shift-JIS "ソ" is 0x83 0x5C; its trail byte is a backslash in ASCII
        let sjis = CharEncoding::CodePage(CodePage::ShiftJis);
        let bytes = b"a\x83\x5C1\xB1";
        let mut scratch = String::new();
        let text = decode(bytes, sjis, &mut scratch).to_owned();
        assert!(!text.contains('\\'));
        assert_eq!(text.chars().count(), 5);
        assert!(text.starts_with('a') && text.contains('1'));
        let mut out = Vec::new();
        encode(&text.replace('1', "#"), sjis, &mut out);
        assert_eq!(out, b"a\x83\x5C#\xB1");
    }

    #[test]
    fn non_ascii_masks_in_code_page_columns_become_question_marks() {
        let mut out = Vec::new();
        encode("a•b", CP, &mut out);
        assert_eq!(out, b"a?b");
    }

    #[test]
    fn utf8_and_utf16() {
        let mut scratch = String::new();
        assert_eq!(
            decode("żółw".as_bytes(), CharEncoding::Utf8, &mut scratch),
            "żółw"
        );
        assert_eq!(
            decode(b"a\xFFb", CharEncoding::Utf8, &mut scratch),
            "a\u{FFFD}b"
        );
        let mut out = Vec::new();
        encode("h\u{1F600}", CharEncoding::Utf16, &mut out);
        assert_eq!(out, [b'h', 0, 0x3D, 0xD8, 0x00, 0xDE]);
        assert_eq!(
            decode(&out, CharEncoding::Utf16, &mut scratch),
            "h\u{1F600}"
        );
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        let mut v = Vec::new();
        encode("h\u{1F600}", CharEncoding::Utf16, &mut v);
        truncate(&mut v, 5, CharEncoding::Utf16);
        assert_eq!(v, [b'h', 0]);
        let mut v = "aé".as_bytes().to_vec();
        truncate(&mut v, 2, CharEncoding::Utf8);
        assert_eq!(v, b"a");
        let mut v = vec![b'a', 0x82, 0xA0, b'b'];
        truncate(&mut v, 2, CharEncoding::CodePage(CodePage::ShiftJis));
        assert_eq!(v, b"a");
        let mut v = vec![b'a', 0xB1, b'b'];
        truncate(&mut v, 2, CharEncoding::CodePage(CodePage::ShiftJis));
        assert_eq!(v, [b'a', 0xB1]);
        let mut v = b"abc".to_vec();
        truncate(&mut v, 5, CP);
        assert_eq!(v, b"abc");
    }

    #[test]
    fn padding() {
        let mut v = b"ab".to_vec();
        pad(&mut v, 4, CP);
        assert_eq!(v, b"ab  ");
        let mut v = vec![b'a', 0];
        pad(&mut v, 6, CharEncoding::Utf16);
        assert_eq!(v, [b'a', 0, b' ', 0, b' ', 0]);
    }
}

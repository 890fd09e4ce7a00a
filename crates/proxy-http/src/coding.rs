//! Content codings of a response the gateway must mask: gzip, deflate and br are decoded (the
//! decoded size bounded like a plain body, so a small compressed body cannot expand past the
//! limit), anything else is refused.

use std::io::Read as _;

use bytes::Bytes;

/// How a response body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 9110 §8.4.1.2).
    Deflate,
    /// Brotli (RFC 7932).
    Brotli,
}

/// The coding `Content-Encoding` names; one coding at most, and one the gateway decodes.
pub fn coding(h: &hyper::HeaderMap) -> Result<Coding, String> {
    let mut values = h.get_all(hyper::header::CONTENT_ENCODING).iter();
    let Some(v) = values.next() else {
        return Ok(Coding::Identity);
    };
    if values.next().is_some() {
        return Err("the body is encoded more than once".into());
    }
    let v = v.to_str().unwrap_or("").trim();
    if v.contains(',') {
        return Err(format!("the body is encoded more than once ({v})"));
    }
    match v.to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Coding::Identity),
        "gzip" | "x-gzip" => Ok(Coding::Gzip),
        "deflate" => Ok(Coding::Deflate),
        "br" => Ok(Coding::Brotli),
        other => Err(format!(
            "the body is encoded as `{other}`, which the gateway cannot decode"
        )),
    }
}

/// Decode `body` into at most `limit` bytes.
pub fn decode(c: Coding, body: Bytes, limit: usize) -> Result<Bytes, String> {
    let decoder: Box<dyn std::io::Read + '_> = match c {
        Coding::Identity => return Ok(body),
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        Coding::Deflate => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(&body[..], 8192)),
    };
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("the body does not decode: {e}"))?;
    if out.len() > limit {
        return Err(format!(
            "the body is larger than {limit} bytes once decoded"
        ));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        Bytes::from(e.finish().unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn gzip_decodes_within_its_limit_only() {
        let data = vec![b'a'; 100_000];
        let z = gzip(&data);
        assert!(z.len() < 1000, "compresses well");
        assert_eq!(
            decode(Coding::Gzip, z.clone(), 100_000)
                .unwrap_or_default()
                .len(),
            100_000
        );
        assert!(
            decode(Coding::Gzip, z, 99_999).is_err(),
            "a bomb stops at the limit"
        );
        assert!(decode(Coding::Gzip, Bytes::from_static(b"not gzip"), 10).is_err());
    }

    #[test]
    fn brotli_decodes_within_its_limit_only() {
        // 100,000 × "a" in 14 bytes (Python's `brotli.compress`).
        let br = Bytes::from_static(&[
            0x5b, 0x9f, 0x86, 0x81, 0x5f, 0x22, 0x2c, 0x1e, 0x0b, 0x04, 0xb2, 0xfc, 0x02, 0x00,
        ]);
        let out = decode(Coding::Brotli, br.clone(), 100_000).unwrap_or_default();
        assert_eq!(out.len(), 100_000);
        assert!(out.iter().all(|&b| b == b'a'));
        assert!(
            decode(Coding::Brotli, br, 99_999).is_err(),
            "a bomb stops at the limit"
        );
        assert!(decode(Coding::Brotli, Bytes::from_static(b"\xffnot brotli"), 10).is_err());
    }

    #[test]
    fn only_known_single_codings_are_accepted() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(coding(&h), Ok(Coding::Identity));
        h.insert(
            "content-encoding",
            hyper::header::HeaderValue::from_static("GZIP"),
        );
        assert_eq!(coding(&h), Ok(Coding::Gzip));
        h.insert(
            "content-encoding",
            hyper::header::HeaderValue::from_static("br"),
        );
        assert_eq!(coding(&h), Ok(Coding::Brotli));
        h.insert(
            "content-encoding",
            hyper::header::HeaderValue::from_static("zstd"),
        );
        assert!(coding(&h).is_err());
        h.insert(
            "content-encoding",
            hyper::header::HeaderValue::from_static("gzip, gzip"),
        );
        assert!(coding(&h).is_err());
    }
}

//! Masking a response body read whole: JSON path rules first (the document parsed, selected
//! values replaced), then the detectors and key rules of the masking engine over the text.
//! A body that claims to be JSON but does not parse, when path rules must apply, is withheld
//! (fail closed).

use bytes::Bytes;
use gateway_core::masking::{MaskCounts, Masked, SessionMasks, TypeHint};

/// The body type the masking engine reads a response as, from its `Content-Type`, when it
/// is text it can mask; `None` for other types (passed as they are).
pub fn hint(h: &hyper::HeaderMap) -> Option<TypeHint> {
    let ct = h.get(hyper::header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        Some(TypeHint::Json)
    } else if essence.starts_with("text/")
        || essence == "application/xml"
        || essence.ends_with("+xml")
        || essence == "application/x-www-form-urlencoded"
    {
        Some(TypeHint::Text)
    } else {
        None
    }
}

/// Mask `whole` (of type `hint`) for `masks`, counting what fired. `dialect` masks a JSON
/// document its own way, when it reads documents: after the detectors, so what it writes
/// (a Secret's values, still base64) stays as it wrote it.
pub fn mask_body(
    masks: &SessionMasks,
    hint: TypeHint,
    whole: Bytes,
    counts: &mut MaskCounts,
    dialect: Option<&dyn crate::dialect::Dialect>,
) -> Result<Bytes, String> {
    let reads = dialect.filter(|d| d.reads_documents());
    if let (Some(d), TypeHint::Json) = (reads, hint) {
        let text = detect(masks, hint, whole, counts);
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(text);
        }
        let mut doc = parse(&text)?;
        d.mask_document(masks, &mut doc, counts);
        masks.mask_json_paths(&mut doc, counts);
        return serialise(&doc, text.ends_with(b"\n"));
    }
    let text = if hint == TypeHint::Json
        && masks.has_json_paths()
        && !whole.iter().all(u8::is_ascii_whitespace)
    {
        let mut doc = parse(&whole)?;
        masks.mask_json_paths(&mut doc, counts);
        serialise(&doc, whole.ends_with(b"\n"))?
    } else {
        whole
    };
    Ok(detect(masks, hint, text, counts))
}

fn parse(text: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(text).map_err(|e| {
        format!("the response is not the JSON its content type says ({e}); it is withheld")
    })
}

fn serialise(doc: &serde_json::Value, newline: bool) -> Result<Bytes, String> {
    let mut v = serde_json::to_vec(doc).map_err(|e| e.to_string())?;
    if newline {
        v.push(b'\n');
    }
    Ok(Bytes::from(v))
}

/// The detectors and key rules over `text`.
pub(crate) fn detect(
    masks: &SessionMasks,
    hint: TypeHint,
    text: Bytes,
    counts: &mut MaskCounts,
) -> Bytes {
    let mut out = Vec::new();
    match masks.mask_value(&text, hint, &mut out, counts) {
        Masked::Unchanged => text,
        Masked::Replaced => Bytes::from(out),
        Masked::Null => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::config::MaskingConfig;
    use gateway_core::masking::MaskingEngine;

    fn masks() -> std::sync::Arc<SessionMasks> {
        let block = MaskingConfig {
            connections: vec!["arm".into()],
            detectors: vec!["card".into(), "email".into(), "secret".into()],
            json_paths: vec!["$.value".into(), "$.properties.primaryKey".into()],
            ..Default::default()
        };
        MaskingEngine::new(&[block], [3; 32])
            .unwrap_or_else(|e| panic!("{e}"))
            .for_session("arm", &[])
            .unwrap_or_else(|| panic!("applies"))
    }

    #[test]
    fn paths_then_detectors_mask_a_document() {
        let m = masks();
        let mut counts = MaskCounts::new();
        let body = Bytes::from_static(
            br#"{"value":"kv-s3cr3t","properties":{"primaryKey":"pk-1","owner":"ada@example.com","conn":"Server=x;Password=Hunter2;"}}"#,
        );
        let out = mask_body(&m, TypeHint::Json, body, &mut counts, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out);
        for secret in ["kv-s3cr3t", "pk-1", "ada@example.com", "Hunter2"] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            v["value"]
                .as_str()
                .is_some_and(|s| s.starts_with("[REDACTED")),
            "{v}"
        );
        assert_eq!(
            counts.render(m.column_rule_names()).get("column:$.value"),
            Some(&1)
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_withheld_when_paths_apply() {
        let mut counts = MaskCounts::new();
        let r = mask_body(
            &masks(),
            TypeHint::Json,
            Bytes::from_static(b"{\"value\": "),
            &mut counts,
            None,
        );
        assert!(r.is_err());
    }
}

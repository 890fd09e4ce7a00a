//! Secret values in API responses: every value of a Secret's `data` (base64) and
//! `stringData` is replaced with its masked rendering (base64 again for `data`, so typed
//! clients still decode the object), and the `last-applied-configuration` annotation, which
//! carries a copy of them, is masked whole. Secrets are found where the API puts objects:
//! the document itself, a list's `items`, a watch event's `object`, a Table's
//! `rows[*].object`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gateway_core::masking::{ColumnPlan, MaskCounts, Masked, SessionMasks, TypeHint};
use serde_json::Value;

/// The annotation `kubectl apply` keeps the applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Mask every Secret in `doc`.
pub fn mask_document(masks: &SessionMasks, doc: &mut Value, counts: &mut MaskCounts) {
    let mut out = Vec::new();
    visit(masks, doc, false, counts, &mut out, 0);
}

/// Deepest nesting of lists, events and tables followed (a List of Tables is already odd).
const MAX_DEPTH: usize = 4;

fn visit(
    masks: &SessionMasks,
    v: &mut Value,
    secret_list: bool,
    counts: &mut MaskCounts,
    out: &mut Vec<u8>,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let is_secret = kind == "Secret" || (kind.is_empty() && secret_list);
    let is_secret_list = kind == "SecretList";
    if is_secret {
        mask_secret(masks, obj, counts, out);
    } else {
        // Metadata-only shapes (a Table row's PartialObjectMetadata, say) carry a Secret's
        // last-applied copy without saying they are a Secret.
        mask_applied_secret(masks, obj, counts, out);
    }
    if let Some(Value::Array(items)) = obj.get_mut("items") {
        for item in items {
            visit(masks, item, is_secret_list, counts, out, depth + 1);
        }
    }
    // A watch event: `{"type": …, "object": …}`.
    if let Some(o) = obj.get_mut("object") {
        visit(masks, o, false, counts, out, depth + 1);
    }
    if let Some(Value::Array(rows)) = obj.get_mut("rows") {
        for row in rows {
            if let Some(o) = row.get_mut("object") {
                visit(masks, o, false, counts, out, depth + 1);
            }
        }
    }
}

fn mask_secret(
    masks: &SessionMasks,
    obj: &mut serde_json::Map<String, Value>,
    counts: &mut MaskCounts,
    out: &mut Vec<u8>,
) {
    if let Some(Value::Object(data)) = obj.get_mut("data") {
        for value in data.values_mut() {
            let raw = match value.as_str() {
                Some(s) => STANDARD.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec()),
                None => value.to_string().into_bytes(),
            };
            let masked = render(masks, &raw, counts, out);
            *value = Value::String(STANDARD.encode(masked));
        }
    }
    if let Some(Value::Object(data)) = obj.get_mut("stringData") {
        for value in data.values_mut() {
            let raw = match value.as_str() {
                Some(s) => s.as_bytes().to_vec(),
                None => value.to_string().into_bytes(),
            };
            let masked = render(masks, &raw, counts, out);
            *value = Value::String(String::from_utf8_lossy(masked).into_owned());
        }
    }
    let annotation = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(|a| a.get_mut(LAST_APPLIED));
    if let Some(value) = annotation {
        let raw = value.as_str().unwrap_or("").as_bytes().to_vec();
        let masked = render(masks, &raw, counts, out);
        *value = Value::String(String::from_utf8_lossy(masked).into_owned());
    }
}

/// Mask a last-applied annotation that holds a Secret, whatever object carries it.
fn mask_applied_secret(
    masks: &SessionMasks,
    obj: &mut serde_json::Map<String, Value>,
    counts: &mut MaskCounts,
    out: &mut Vec<u8>,
) {
    let annotation = obj
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(|a| a.get_mut(LAST_APPLIED));
    if let Some(value) = annotation {
        let holds_secret = value
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .is_some_and(|v| v["kind"] == "Secret");
        if holds_secret {
            let raw = value.as_str().unwrap_or("").as_bytes().to_vec();
            let masked = render(masks, &raw, counts, out);
            *value = Value::String(String::from_utf8_lossy(masked).into_owned());
        }
    }
}

/// The masked rendering of one value, in `out`.
fn render<'a>(
    masks: &SessionMasks,
    raw: &[u8],
    counts: &mut MaskCounts,
    out: &'a mut Vec<u8>,
) -> &'a [u8] {
    let plan = ColumnPlan::Whole {
        rule: usize::MAX,
        hint: TypeHint::Text,
    };
    match masks.mask_with(plan, raw, out, counts) {
        Masked::Replaced => out,
        // A whole-value plan over text always replaces; should it not, nothing is kept.
        Masked::Unchanged | Masked::Null => {
            out.clear();
            out
        }
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;

//! What approvers are shown of a held extended-protocol command: its bound parameter values,
//! as text, masked like the session's results.

use gateway_core::masking::{ColumnPlan, MaskCounts, Masked, SessionMasks, TypeHint};

use crate::codec::frontend::Bind;

/// Longest parameter shown, in characters; longer ones are cut with an ellipsis.
const MAX_SHOWN: usize = 256;

/// Each parameter of `bind` as approvers see it: text-format values as text, binary ones as
/// `\x…` hex, `None` for NULL. Under masking, the detectors apply to every value, and every
/// value is masked whole when the statement names a column a rule covers (it may be compared
/// with, or written to, that column).
pub(super) fn shown_parameters(
    bind: &Bind<'_>,
    masks: Option<&SessionMasks>,
    text: &str,
) -> Vec<Option<String>> {
    let mentioned = masks.and_then(|m| m.mentioned_rule(text));
    let mut out = Vec::new();
    let mut counts = MaskCounts::new();
    bind.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let v = (*p)?;
            let binary = match bind.param_formats.as_slice() {
                [] => false,
                [one] => *one == 1,
                each => each.get(i) == Some(&1),
            };
            let shown = if binary {
                let mut s = String::with_capacity(2 + v.len() * 2);
                s.push_str("\\x");
                for b in v {
                    s.push_str(&format!("{b:02x}"));
                }
                s
            } else {
                String::from_utf8_lossy(v).into_owned()
            };
            let Some(m) = masks else {
                return Some(cut(shown));
            };
            let plan = match mentioned {
                Some(rule) => ColumnPlan::Whole {
                    rule,
                    hint: TypeHint::Text,
                },
                None => ColumnPlan::Scan(TypeHint::Text),
            };
            Some(cut(
                match m.mask_with(plan, shown.as_bytes(), &mut out, &mut counts) {
                    Masked::Replaced => String::from_utf8_lossy(&out).into_owned(),
                    Masked::Null => "[masked]".to_string(),
                    Masked::Unchanged => shown,
                },
            ))
        })
        .collect()
}

fn cut(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(MAX_SHOWN) {
        s.truncate(at);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masks() -> std::sync::Arc<SessionMasks> {
        let block = gateway_core::config::MaskingConfig {
            connections: vec!["c".into()],
            detectors: vec!["card".into()],
            columns: vec!["*.ssn".into()],
            ..Default::default()
        };
        gateway_core::masking::MaskingEngine::new(&[block], [7; 32])
            .unwrap()
            .for_session("c", &[])
            .unwrap()
    }

    fn bind<'a>(params: Vec<Option<&'a [u8]>>, formats: Vec<i16>) -> Bind<'a> {
        Bind {
            portal: "",
            statement: "",
            param_formats: formats,
            params,
            result_formats: Vec::new(),
        }
    }

    #[test]
    fn values_are_shown_as_text_masked_like_results() {
        let b = bind(
            vec![
                Some(b"0"),
                None,
                Some(b"4111 1111 1111 1111"),
                Some(&[0, 7]),
            ],
            vec![0, 0, 0, 1],
        );
        let sql = "delete from t where id > $1 and a = $2 and b = $3 and c = $4";
        let plain = shown_parameters(&b, None, sql);
        assert_eq!(
            plain,
            [
                Some("0".into()),
                None,
                Some("4111 1111 1111 1111".into()),
                Some("\\x0007".into())
            ]
        );
        let m = masks();
        let masked = shown_parameters(&b, Some(&m), sql);
        assert_eq!(masked[0].as_deref(), Some("0"));
        assert_eq!(masked[1], None);
        assert!(
            !masked[2].as_deref().unwrap().contains("4111"),
            "{masked:?}"
        );
        // A statement naming a covered column: every value may be that column's.
        let named = shown_parameters(&b, Some(&m), "select * from t where ssn = $1");
        assert_ne!(named[0].as_deref(), Some("0"), "{named:?}");
        let long = "x".repeat(1000);
        let b = bind(vec![Some(long.as_bytes())], Vec::new());
        assert_eq!(
            shown_parameters(&b, None, "select $1")[0]
                .as_ref()
                .unwrap()
                .chars()
                .count(),
            MAX_SHOWN + 1
        );
    }
}

//! What masking needs from each forwarded frame, and what it refuses outright.

use super::*;

/// What masking needs from a forwarded frame.
pub(super) enum Extra {
    None,
    /// A command with results: what they come from.
    Source(Arc<ResultSource>),
    /// A Describe: whose result columns its answer reports.
    Describe(Arc<Prepared>),
}

impl Upstream<'_> {
    /// What masking needs from a frame about to be forwarded.
    pub(super) fn mask_extra(&mut self, masks: &SessionMasks, frame: &Frame, plan: &Plan) -> Extra {
        let (text, exec) = match frame.tag {
            fe::BIND => {
                if let Ok(b) = codec::parse_bind(frame.body()) {
                    let formats: Arc<[i16]> = Arc::from(b.result_formats);
                    if self.portal_formats.len() >= MAX_NAMES {
                        self.portal_formats.clear();
                    }
                    self.portal_formats.insert(name_key(b.portal), formats);
                }
                return Extra::None;
            }
            fe::CLOSE => {
                if let Ok((b'P', name)) = codec::parse_close(frame.body()) {
                    self.portal_formats.remove(&name_key(name));
                }
                return Extra::None;
            }
            fe::DESCRIBE => {
                let Ok((kind, name)) = codec::parse_describe(frame.body()) else {
                    return Extra::None;
                };
                let map = if kind == b'S' {
                    &self.statements
                } else {
                    &self.portals
                };
                // Every Describe is answered once; an unknown name still takes its place.
                let p = map
                    .get(&name_key(name))
                    .cloned()
                    .unwrap_or_else(|| Prepared::unknown(String::new()));
                return Extra::Describe(p);
            }
            _ if !matches!(plan, Plan::Command { .. }) => return Extra::None,
            fe::QUERY => match codec::parse_query(frame.body()) {
                Ok(t) => (Arc::<str>::from(t), None),
                Err(_) => return Extra::None,
            },
            fe::EXECUTE => {
                let Ok((portal, _)) = codec::parse_execute(frame.body()) else {
                    return Extra::None;
                };
                let key = name_key(portal);
                let p = self
                    .portals
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Prepared::unknown(String::new()));
                let formats = self
                    .portal_formats
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(Vec::new()));
                (p.text.clone(), Some((p, formats)))
            }
            _ => return Extra::None,
        };
        let statements = match (&exec, self.query_statements.take()) {
            (Some((p, _)), _) => p.statements.clone(),
            (None, Some(decided)) => decided,
            (None, None) => self.ctx.services.classifier.classify(
                &text,
                LexOptions {
                    standard_conforming_strings: self.standard_conforming_strings,
                    ..LexOptions::default()
                },
            ),
        };
        let mentioned = masks.mentioned_rule(&text);
        // Whole rows read through an expression, where the statement shows it; a statement
        // the classifier cannot follow output by output (a recursive WITH, a table function,
        // a write's RETURNING) that reads a covered table may do the same unseen, so its
        // computed columns count too. Rows fetched from a cursor or returned by a statement
        // prepared in SQL come from a statement of another message (or of a function):
        // their computed columns are masked whole.
        let rows = masks
            .whole_row_rule(&statements)
            .or_else(|| {
                statements
                    .iter()
                    .filter(|s| s.outputs.is_none())
                    .find_map(|s| masks.touched_rule(s.tables.iter().map(String::as_str)))
            })
            .or_else(|| {
                statements
                    .iter()
                    .any(|s| runs_an_earlier_statement(&s.shape))
                    .then(|| masks.any_rule())
                    .flatten()
            });
        let touched = mentioned.or(rows).or_else(|| {
            masks.touched_rule(
                statements
                    .iter()
                    .flat_map(|s| s.tables.iter().map(String::as_str)),
            )
        });
        Extra::Source(Arc::new(ResultSource {
            mentioned,
            rows,
            touched,
            text,
            exec,
            statements,
        }))
    }
}

/// Whether a statement (by its shape) returns rows of a statement that is not in its text:
/// `FETCH` from a cursor, `EXECUTE` of a statement prepared in SQL.
fn runs_an_earlier_statement(shape: &str) -> bool {
    shape
        .split_whitespace()
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("fetch") || w.eq_ignore_ascii_case("execute"))
}

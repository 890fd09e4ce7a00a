//! What masking needs from each forwarded frame, and what it refuses outright.

use super::*;

/// Catalog relations holding samples of column values (bare names; qualified names add them
/// too).
const STATISTICS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext",
    "pg_statistic_ext_data",
];

/// What masking needs from a forwarded frame.
pub(super) enum Extra {
    None,
    /// A command with results: what they come from.
    Source(Arc<ResultSource>),
    /// A Describe: whose result columns its answer reports.
    Describe(Arc<Prepared>),
}

impl Upstream<'_> {
    /// What masking needs from a frame about to be forwarded; also refuses binary COPY out,
    /// which can't be masked, before it reaches the target.
    pub(super) fn mask_extra(
        &mut self,
        masks: &SessionMasks,
        frame: &Frame,
        plan: &mut Plan,
        events: &mut [AuditEvent],
    ) -> Extra {
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
        // The planner's statistics hold column values (most common values, histogram
        // bounds) outside any column's lineage: not readable on a masked session.
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
        if statements
            .iter()
            .flat_map(|s| s.tables.iter())
            .any(|t| STATISTICS.contains(&t.as_str()))
        {
            let message = "portcullis: the planner's statistics are not readable on this connection because its results are masked: they hold column values";
            if let Some(ev) = events.last_mut() {
                ev.verdict = Some(gateway_core::audit::Verdict::Deny);
                ev.reason = Some(message.into());
            }
            *plan = refuse(
                "42501",
                message,
                "pg_stats and pg_statistic* show values of any column",
            );
            return Extra::None;
        }
        let copy = text
            .as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"copy"));
        if copy
            && let Some(c) = crate::mask::copy::parse_copy(&text)
            && c.format == crate::mask::copy::CopyFormat::Binary
        {
            let message = "portcullis: binary COPY is refused on this connection because its results are masked; use text or CSV format";
            if let Some(ev) = events.last_mut() {
                ev.verdict = Some(gateway_core::audit::Verdict::Deny);
                ev.reason = Some(message.into());
            }
            *plan = refuse("0A000", message, "binary COPY data can't be masked");
            return Extra::None;
        }
        let mentioned = masks.mentioned_rule(&text);
        let touched = mentioned.or_else(|| {
            masks.touched_rule(
                statements
                    .iter()
                    .flat_map(|s| s.tables.iter().map(String::as_str)),
            )
        });
        Extra::Source(Arc::new(ResultSource {
            mentioned,
            touched,
            text,
            exec,
        }))
    }
}

//! The lazy writer of one masked value.

use super::*;

/// Writes the masked copy of one value lazily: nothing happens to `out` until the first
/// finding.
pub(crate) struct Rewriter<'a> {
    pub(super) v: &'a [u8],
    pub(super) out: &'a mut Vec<u8>,
    pub(super) pos: usize,
    pub(super) started: bool,
    /// Replacements are wrapped in quotes (a bare JSON value slot).
    pub(super) quote: bool,
    pub(super) session: &'a SessionMasks,
    pub(super) counts: &'a mut MaskCounts,
}

impl Rewriter<'_> {
    pub(super) fn replace(&mut self, start: usize, end: usize, t: Target, strategy: MaskStrategy) {
        if !self.started {
            self.out.clear();
            self.started = true;
        }
        self.out.extend_from_slice(&self.v[self.pos..start]);
        let raw = &self.v[start..end];
        render(t, strategy, raw, &self.session.keyed, self.quote, self.out);
        self.pos = end;
    }

    /// A JSON field's whole value (`v[start..end]`, quotes and all).
    pub(super) fn field(&mut self, start: usize, end: usize, why: Why) {
        let (t, strategy) = match why {
            Why::Column(i) => {
                self.counts.add_column(i);
                let s = self
                    .session
                    .rules
                    .get(i)
                    .map_or(MaskStrategy::Redact, |r| r.strategy);
                (Target::Column, s)
            }
            Why::Secret => {
                self.counts.add_kind(Kind::Pair);
                (
                    Target::Found(Kind::Pair),
                    self.session.strategies[Detector::Secret.index()],
                )
            }
        };
        let quote = std::mem::replace(&mut self.quote, true);
        self.replace(start, end, t, strategy);
        self.quote = quote;
    }

    /// Detectors over JSON structure between strings (bare numbers); replacements quoted.
    pub(super) fn scan_bare(&mut self, v: &[u8], from: usize, to: usize) {
        if to > from && !self.session.scanner.is_empty() {
            self.quote = true;
            self.session.scanner.scan(&v[..to], from, self);
            self.quote = false;
        }
    }

    /// Detectors inside one JSON string's raw content.
    pub(super) fn scan_string(&mut self, v: &[u8], from: usize, to: usize) {
        if to > from && !self.session.scanner.is_empty() {
            self.session.scanner.scan(&v[..to], from, self);
        }
    }

    pub(super) fn finish(self) -> Masked {
        if self.started {
            self.out.extend_from_slice(&self.v[self.pos..]);
            self.counts.add_value();
            Masked::Replaced
        } else {
            Masked::Unchanged
        }
    }
}

impl Sink for Rewriter<'_> {
    fn floor(&self) -> usize {
        self.pos
    }

    fn found(&mut self, start: usize, end: usize, kind: Kind) {
        self.counts.add_kind(kind);
        let strategy = self.session.strategies[kind.detector().index()];
        self.replace(start, end, Target::Found(kind), strategy);
    }
}

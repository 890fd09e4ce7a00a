//! The target's answers on their way to the client.
//!
//! Every answer's token stream is read as it arrives (packets joined, tokens cut where they
//! end, a row spanning packets resumed where it stopped), for what its `command_end` event
//! records: rows counted by DONE tokens and the first error, and for the relay's prepared
//! handles the integer an RPC's first OUTPUT parameter came back with.
//!
//! Without masking the target's packets are forwarded as they are, byte for byte, as soon as
//! each is whole; the token reader only watches. An answer it cannot read is still forwarded
//! (the event then has no row count).
//!
//! With masking, rows are rewritten before they leave: character values (CHAR, VARCHAR,
//! NCHAR, NVARCHAR, their MAX forms, TEXT, NTEXT, XML, and character SQL_VARIANTs) by the
//! session's column rules and detectors, error and notice text quoting a protected value,
//! output parameters. The tokens are packed into packets of the session's size again, with the
//! target's SPID; an answer where nothing changed is the same token bytes. What cannot be masked
//! fails closed: a column rule that covers a column of another type (an integer, a date)
//! withholds the rest of that answer and ends it with an error, and a stream the gateway cannot
//! read ends the session with an error rather than pass anything on unread.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use gateway_core::action::Output;
use gateway_core::masking::{ColumnPlan, MaskCounts, ResultMask, SessionMasks, TypeHint};

use crate::codec::messages::{ServerMessage, done_status};
use crate::codec::metadata::{ColMetadata, RETURN_OUTPUT};
use crate::codec::packet::{self, HEADER_LEN};
use crate::codec::rows::{self, RowMasker};
use crate::codec::tokens::{StreamState, Token, next_token};
use crate::codec::write;
use crate::error::{Result, TdsError};
use crate::prepared::Pending;
use crate::result_plan::{plan, quoted_masked, replacement, unmaskable};

/// What masking needs to know about the request being answered.
#[derive(Debug, Default)]
pub(crate) struct Lineage {
    /// The first column rule the request's text names (expressions over it are masked whole).
    pub mentioned: Option<usize>,
    /// The first column rule that may cover a table the request reads.
    pub touched: Option<usize>,
    /// The output columns of the request's only statement, when it is a plain `SELECT`.
    pub outputs: Option<Vec<Output>>,
}

/// The request being answered by the target.
pub(crate) struct InFlight {
    pub number: u64,
    pub started: Instant,
    pub lineage: Lineage,
    /// A preparing call whose handle this answer carries.
    pub prepare: Option<Pending>,
}

/// How an answer ended, for its `command_end` event.
pub(crate) struct Ended {
    pub flight: InFlight,
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub masked: Option<serde_json::Value>,
    /// The value of the one OUTPUT parameter of ordinal 0 the answer returned, when there was
    /// exactly one and it is an integer (a prepared handle); `None` otherwise, and for an
    /// answer that could not be read.
    pub handle: Option<i64>,
}

/// Masking state of a session that masking applies to.
struct Masking {
    masks: Arc<SessionMasks>,
    masker: RowMasker,
    /// The plan of the current result set (`None` before its COLMETADATA).
    plan: Option<ResultMask>,
    counts: MaskCounts,
    scratch: Vec<u8>,
    /// Why the rest of this answer is withheld.
    withheld: Option<String>,
    /// Masked token bytes not yet packed into a packet.
    payload: BytesMut,
    spid: [u8; 2],
    packet_id: u8,
}

/// One session's response stream.
pub(crate) struct Responses {
    /// Bytes from the target, whole packets not yet handled.
    pub packets: BytesMut,
    pub inflight: Option<InFlight>,
    /// Payload bytes not yet cut into whole tokens.
    tokens: BytesMut,
    state: StreamState,
    masking: Option<Masking>,
    watch: Watch,
    /// The answer could not be read (unmasked sessions only): watched no further until it ends.
    lost: bool,
}

impl Responses {
    pub fn new(packets: BytesMut, masks: Option<Arc<SessionMasks>>) -> Responses {
        Responses {
            packets,
            inflight: None,
            tokens: BytesMut::new(),
            state: StreamState::new(),
            masking: masks.map(|masks| Masking {
                masks,
                masker: RowMasker::new(),
                plan: None,
                counts: MaskCounts::new(),
                scratch: Vec::new(),
                withheld: None,
                payload: BytesMut::new(),
                spid: [0, 0],
                packet_id: 1,
            }),
            watch: Watch::default(),
            lost: false,
        }
    }

    /// Handles every whole packet received: forwarded (or masked) into `out`. Each answer
    /// that ended is pushed to `ended`.
    pub fn relay(
        &mut self,
        packet_size: usize,
        out: &mut BytesMut,
        ended: &mut Vec<Ended>,
    ) -> Result<()> {
        while let Some(len) =
            packet::whole_packet_len(&self.packets).map_err(TdsError::target_codec)?
        {
            if len > packet::MAX_PACKET {
                return Err(TdsError::Target(format!("a packet of {len} bytes")));
            }
            let raw = self.packets.split_to(len);
            let eom = raw[1] & packet::STATUS_EOM != 0;
            let body = raw.get(HEADER_LEN..).unwrap_or_default();
            if let Some(m) = self.masking.as_mut() {
                m.spid = [raw[4], raw[5]];
                self.tokens.extend_from_slice(body);
                if let Err(e) = self.read_tokens() {
                    // Nothing unread goes to the client: it gets an error, the session ends.
                    if let Some(m) = self.masking.as_mut() {
                        m.payload.clear();
                        let text = format!(
                            "portcullis: the target's answer cannot be read, so it is not passed on and the session ends: {e}"
                        );
                        let msg = ServerMessage::from_gateway(50000, 16, &text);
                        let _ = write::write_refusal(&mut m.payload, &msg);
                        m.flush(out, packet_size, true);
                    }
                    return Err(TdsError::target_codec(e));
                }
                if let Some(m) = self.masking.as_mut() {
                    m.flush(out, packet_size, eom);
                }
            } else {
                if len <= packet_size {
                    out.extend_from_slice(&raw);
                } else {
                    // Over the size the client was given: cut to it, as it can read no more.
                    split_packet(&raw, packet_size, out);
                }
                if !self.lost {
                    self.tokens.extend_from_slice(body);
                    if let Err(e) = self.read_tokens() {
                        tracing::debug!(error = %e, "an answer's tokens could not be followed");
                        self.lost = true;
                        self.watch.rows = None;
                        self.tokens.clear();
                    }
                }
            }
            if eom {
                self.answer_ended(ended);
            }
        }
        Ok(())
    }

    fn answer_ended(&mut self, ended: &mut Vec<Ended>) {
        let lost = self.lost || !self.tokens.is_empty();
        if lost {
            // The next answer starts afresh.
            self.tokens.clear();
            self.state = StreamState::new();
        }
        self.lost = false;
        let w = std::mem::take(&mut self.watch);
        let rows = w.rows.filter(|_| !lost);
        let error = w.error;
        let handle = w.handle.filter(|_| w.handles == 1 && !lost);
        let masked = self.masking.as_mut().and_then(|m| {
            m.plan = None;
            m.withheld = None;
            m.packet_id = 1;
            let counts = (!m.counts.is_empty())
                .then(|| serde_json::json!(m.counts.render(m.masks.column_rule_names())));
            m.counts.clear();
            counts
        });
        if let Some(flight) = self.inflight.take() {
            ended.push(Ended {
                flight,
                rows,
                error,
                masked,
                handle,
            });
        }
    }

    /// Reads every whole token in `tokens`; with masking, writes what the client gets.
    fn read_tokens(&mut self) -> crate::codec::Result<()> {
        let mut at = 0;
        let result = loop {
            let next = match next_token(self.tokens.get(at..).unwrap_or_default(), &mut self.state)
            {
                Ok(Some(t)) => t,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            let (token, len) = next;
            let raw = self.tokens.get(at..at + len).unwrap_or_default();
            at += len;
            let mut sent_error = None;
            if let Some(m) = self.masking.as_mut() {
                let lineage = self.inflight.as_ref().map(|f| &f.lineage);
                match m.token(&token, raw, self.state.metadata(), lineage) {
                    Ok(sent) => sent_error = sent,
                    Err(e) => break Err(e),
                }
            }
            watch(&mut self.watch, &token, sent_error.as_deref());
            if let Token::ReturnValue(rv) = &token
                && rv.ordinal == 0
                && rv.status == RETURN_OUTPUT
            {
                // Every one is counted, so that two make the handle unknown.
                self.watch.handles = self.watch.handles.saturating_add(1);
                self.watch.handle = rv.int_value(raw);
            }
        };
        self.tokens.advance(at);
        result
    }
}

/// What the answer's event records: rows (a DONE's count where it gives one, else the rows
/// sent since the last DONE), the first error as the client got it.
fn watch(w: &mut Watch, token: &Token, sent_error: Option<&str>) {
    match token {
        Token::Row | Token::NbcRow => w.streamed += 1,
        Token::Done(d) | Token::DoneProc(d) | Token::DoneInProc(d) => {
            let n = if d.status & done_status::COUNT != 0 {
                d.row_count
            } else {
                w.streamed
            };
            if n > 0 || d.status & done_status::COUNT != 0 {
                *w.rows.get_or_insert(0) += n;
            }
            w.streamed = 0;
        }
        Token::Error(e) if w.error.is_none() => {
            let text = sent_error.unwrap_or(&e.message);
            w.error = Some(format!("error {}: {}", e.number, text));
        }
        _ => {}
    }
}

/// What is counted of one answer.
#[derive(Default)]
struct Watch {
    rows: Option<u64>,
    streamed: u64,
    error: Option<String>,
    /// OUTPUT parameters of ordinal 0 seen, and the last one's integer value.
    handles: u32,
    handle: Option<i64>,
}

impl Masking {
    /// Writes what the client gets for one token.
    fn token(
        &mut self,
        token: &Token,
        raw: &[u8],
        meta: Option<&Arc<ColMetadata>>,
        lineage: Option<&Lineage>,
    ) -> crate::codec::Result<Option<String>> {
        if self.withheld.is_some() {
            if token.ends_response() {
                let why = self.withheld.as_deref().unwrap_or_default();
                let msg = ServerMessage::from_gateway(50000, 16, why);
                write::write_refusal(&mut self.payload, &msg)?;
            }
            return Ok(None);
        }
        match token {
            Token::ColMetadata(meta) => {
                let plan = plan(&self.masks, meta, lineage);
                if let Some(why) = unmaskable(&plan, meta) {
                    self.withheld = Some(why);
                    return Ok(None);
                }
                self.plan = Some(plan);
                self.payload.extend_from_slice(raw);
            }
            Token::Row | Token::NbcRow => {
                let (Some(plan), Some(meta)) = (self.plan.as_ref(), meta) else {
                    return Err(crate::codec::CodecError::Invalid(
                        "a row before its column metadata".into(),
                    ));
                };
                if plan.is_noop() {
                    self.payload.extend_from_slice(raw);
                    return Ok(None);
                }
                let (scratch, counts) = (&mut self.scratch, &mut self.counts);
                let masked = self
                    .masker
                    .mask_row(raw, meta, &mut self.payload, |col, text| {
                        replacement(plan.mask(col, text.as_bytes(), scratch, counts), scratch)
                    })?;
                if masked == rows::Masked::Unchanged {
                    self.payload.extend_from_slice(raw);
                }
            }
            Token::ReturnValue(rv) => {
                let rule = lineage.and_then(|l| l.mentioned);
                let (masks, scratch, counts) = (&self.masks, &mut self.scratch, &mut self.counts);
                let masked = self
                    .masker
                    .mask_return_value(raw, rv, &mut self.payload, |text| {
                        let m = match rule {
                            Some(rule) => masks.mask_with(
                                ColumnPlan::Whole {
                                    rule,
                                    hint: TypeHint::Text,
                                },
                                text.as_bytes(),
                                scratch,
                                counts,
                            ),
                            None => {
                                masks.mask_value(text.as_bytes(), TypeHint::Text, scratch, counts)
                            }
                        };
                        replacement(m, scratch)
                    })?;
                if masked == rows::Masked::Unchanged {
                    self.payload.extend_from_slice(raw);
                }
            }
            Token::Error(msg) | Token::Info(msg) => {
                let rule = lineage.and_then(|l| l.mentioned.or(l.touched));
                match rule
                    .and_then(|r| quoted_masked(&self.masks, r, &msg.message, &mut self.counts))
                {
                    Some(text) => {
                        let new = ServerMessage {
                            message: text,
                            ..msg.clone()
                        };
                        if matches!(token, Token::Error(_)) {
                            write::write_error(&mut self.payload, &new)?;
                        } else {
                            write::write_info(&mut self.payload, &new)?;
                        }
                        return Ok(Some(new.message));
                    }
                    None => self.payload.extend_from_slice(raw),
                }
            }
            _ => self.payload.extend_from_slice(raw),
        }
        Ok(None)
    }

    /// Packs the masked payload into packets: whole packets as they fill, the rest at the end
    /// of the answer.
    fn flush(&mut self, out: &mut BytesMut, packet_size: usize, eom: bool) {
        let room = packet_size.clamp(packet::MIN_PACKET, packet::MAX_PACKET) - HEADER_LEN;
        while self.payload.len() > room || (eom && !self.payload.is_empty()) {
            let n = self.payload.len().min(room);
            let last = eom && n == self.payload.len();
            let status = if last { packet::STATUS_EOM } else { 0 };
            packet::put_packet(
                out,
                packet::TABULAR_RESULT,
                status,
                self.spid,
                self.packet_id,
                self.payload.get(..n).unwrap_or_default(),
            );
            self.packet_id = self.packet_id.wrapping_add(1);
            self.payload.advance(n);
            if last {
                return;
            }
        }
        if eom {
            // Everything was sent in whole packets: the end is an empty one.
            packet::put_packet(
                out,
                packet::TABULAR_RESULT,
                packet::STATUS_EOM,
                self.spid,
                self.packet_id,
                &[],
            );
        }
    }
}

/// `raw` (one packet) as packets of at most `packet_size`, its header kept and its EOM on the
/// last.
fn split_packet(raw: &[u8], packet_size: usize, out: &mut BytesMut) {
    let room = packet_size.clamp(packet::MIN_PACKET, packet::MAX_PACKET) - HEADER_LEN;
    let (ty, status, spid, mut id) = (raw[0], raw[1], [raw[4], raw[5]], raw[6]);
    let mut chunks = raw
        .get(HEADER_LEN..)
        .unwrap_or_default()
        .chunks(room)
        .peekable();
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let st = if last {
            status
        } else {
            status & !packet::STATUS_EOM
        };
        packet::put_packet(out, ty, st, spid, id, chunk);
        id = id.wrapping_add(1);
    }
}

#[cfg(test)]
#[path = "results_tests.rs"]
mod tests;

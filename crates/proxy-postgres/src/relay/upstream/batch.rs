//! Refusals and the target-bound batch each frame joins.

use super::*;

/// A refusal: the error the client reads in place of the command's answer.
pub(super) fn refuse(code: &str, message: &str, detail: &str) -> Plan {
    let mut err = BytesMut::with_capacity(128 + message.len() + detail.len());
    codec::put_error(&mut err, "ERROR", code, message, Some(detail), None);
    Plan::Refuse {
        error: err.freeze(),
        parse_name: None,
    }
}

/// Append the frame (or its refusal substitute) to the target-bound batch.
pub(super) fn forward(
    sh: &mut Shared,
    frame: Frame,
    plan: Plan,
    op: Option<PendingOp>,
    extra: Extra,
    on_record: &OnRecord,
    out: &mut BytesMut,
) {
    let batch = sh.batches_sent;
    let now = Instant::now();
    let source = match extra {
        Extra::None => None,
        Extra::Source(s) => Some(s),
        Extra::Describe(p) => {
            sh.describes.push_back((batch, p));
            None
        }
    };
    match plan {
        Plan::Raw => out.extend_from_slice(&frame.raw),
        Plan::Command { ticket, statements } => {
            // The proof that the command may run: its event is on record.
            let command = ticket.admit(on_record).number();
            for _ in 0..statements {
                sh.inflight.push_back(InFlight {
                    batch,
                    command,
                    started: now,
                    source: source.clone(),
                });
            }
            out.extend_from_slice(&frame.raw);
        }
        Plan::Empty => {
            sh.inflight.push_back(InFlight {
                batch,
                command: 0,
                started: now,
                source: None,
            });
            out.extend_from_slice(&frame.raw);
        }
        // Decided by `hold` before anything is forwarded.
        Plan::Hold { .. } => debug_assert!(false, "a held command reached forwarding"),
        Plan::Refuse { error, parse_name } => {
            sh.substitutes.push_back(Substitute { batch, error });
            if matches!(frame.tag, fe::QUERY | fe::FUNCTION_CALL) {
                // Both end their own batch: a Query answers with an error and ReadyForQuery.
                codec::put_query(out, &sh.marker);
            } else {
                // Inside an extended-protocol batch: a Parse that fails puts the target in
                // the error state until Sync, as the refused message would have. A refused
                // Parse keeps the client's name (replacing the unnamed statement as it
                // would); a refused Execute uses a name of the gateway's own.
                let name = parse_name.unwrap_or_else(|| format!("{}_x", sh.marker));
                let parse = codec::Parse {
                    name: &name,
                    query: &sh.marker,
                    param_types: Vec::new(),
                };
                // A name from a decoded Parse and a short query fit the encoder's limits.
                let _ = codec::put_parse(out, &parse);
            }
        }
    }
    if let Some(op) = op {
        sh.pending.push_back((batch, op));
    }
    if matches!(frame.tag, fe::QUERY | fe::SYNC | fe::FUNCTION_CALL) {
        sh.batches_sent += 1;
    }
}

//! The tabular-result token stream (MS-TDS 2.2.7): where each token ends, and the parsed content
//! of the tokens the gateway acts on.
//!
//! The caller keeps the payload bytes of the response packets in one buffer and calls
//! [`next_token`] on the part not consumed yet. A token that has not fully arrived gives
//! `Ok(None)`; the caller appends the next packet's payload and calls again with the same start.
//! A ROW that spans many packets is resumed where the previous call stopped, so the scan stays
//! linear in the bytes received.

use std::sync::Arc;

use super::CodecError;
use super::messages::{
    Done, EnvChange, FeatureAck, LoginAck, ServerMessage, done_status, feature, read_feature_acks,
};
use super::metadata::{ColMetadata, Parsed, ReturnValue, read_colmetadata, read_return_value};
use super::tokenbuf::{Rd, Step, Stop, complete, need_more};
use super::values::{RowCursor, scan_row};

/// Token type bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    ColMetadata,
    Row,
    NbcRow,
    Done,
    DoneProc,
    DoneInProc,
    Error,
    Info,
    EnvChange,
    LoginAck,
    ReturnValue,
    ReturnStatus,
    Order,
    ColInfo,
    TabName,
    FeatureExtAck,
    FedAuthInfo,
    Sspi,
    SessionState,
    DataClassification,
}

impl TokenKind {
    /// The kind for a token byte the gateway can frame.
    pub fn from_byte(b: u8) -> Option<Self> {
        use TokenKind::*;
        Some(match b {
            0x81 => ColMetadata,
            0xD1 => Row,
            0xD2 => NbcRow,
            0xFD => Done,
            0xFE => DoneProc,
            0xFF => DoneInProc,
            0xAA => Error,
            0xAB => Info,
            0xE3 => EnvChange,
            0xAD => LoginAck,
            0xAC => ReturnValue,
            0x79 => ReturnStatus,
            0xA9 => Order,
            0xA5 => ColInfo,
            0xA4 => TabName,
            0xAE => FeatureExtAck,
            0xEE => FedAuthInfo,
            0xED => Sspi,
            0xE4 => SessionState,
            0xA3 => DataClassification,
            _ => return None,
        })
    }

    pub fn byte(self) -> u8 {
        use TokenKind::*;
        match self {
            ColMetadata => 0x81,
            Row => 0xD1,
            NbcRow => 0xD2,
            Done => 0xFD,
            DoneProc => 0xFE,
            DoneInProc => 0xFF,
            Error => 0xAA,
            Info => 0xAB,
            EnvChange => 0xE3,
            LoginAck => 0xAD,
            ReturnValue => 0xAC,
            ReturnStatus => 0x79,
            Order => 0xA9,
            ColInfo => 0xA5,
            TabName => 0xA4,
            FeatureExtAck => 0xAE,
            FedAuthInfo => 0xEE,
            Sspi => 0xED,
            SessionState => 0xE4,
            DataClassification => 0xA3,
        }
    }
}

/// One token. Rows carry no data here: walk them with
/// [`RowValues`](super::values::RowValues) or mask them with [`RowMasker`](super::rows::RowMasker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// New result set; also kept in the [`StreamState`].
    ColMetadata(Arc<ColMetadata>),
    /// COLMETADATA with count 0xFFFF: rows use metadata the client cached (fNoMetaData).
    NoMetadata,
    Row,
    NbcRow,
    Done(Done),
    DoneProc(Done),
    DoneInProc(Done),
    Error(ServerMessage),
    Info(ServerMessage),
    EnvChange(EnvChange),
    LoginAck(LoginAck),
    FeatureExtAck(Vec<FeatureAck>),
    ReturnStatus(i32),
    ReturnValue(ReturnValue),
    Order,
    ColInfo,
    TabName,
    FedAuthInfo,
    Sspi,
    SessionState,
    DataClassification,
}

impl Token {
    pub fn kind(&self) -> TokenKind {
        use TokenKind as K;
        match self {
            Token::ColMetadata(_) | Token::NoMetadata => K::ColMetadata,
            Token::Row => K::Row,
            Token::NbcRow => K::NbcRow,
            Token::Done(_) => K::Done,
            Token::DoneProc(_) => K::DoneProc,
            Token::DoneInProc(_) => K::DoneInProc,
            Token::Error(_) => K::Error,
            Token::Info(_) => K::Info,
            Token::EnvChange(_) => K::EnvChange,
            Token::LoginAck(_) => K::LoginAck,
            Token::FeatureExtAck(_) => K::FeatureExtAck,
            Token::ReturnStatus(_) => K::ReturnStatus,
            Token::ReturnValue(_) => K::ReturnValue,
            Token::Order => K::Order,
            Token::ColInfo => K::ColInfo,
            Token::TabName => K::TabName,
            Token::FedAuthInfo => K::FedAuthInfo,
            Token::Sspi => K::Sspi,
            Token::SessionState => K::SessionState,
            Token::DataClassification => K::DataClassification,
        }
    }

    /// A DONE or DONEPROC without DONE_MORE: the last token of the response to a request. A
    /// DONEPROC marked DONE_RPCINBATCH ends one RPC of a batch, not the response.
    pub fn ends_response(&self) -> bool {
        match self {
            Token::Done(d) => !d.has_more(),
            Token::DoneProc(d) => !d.has_more() && d.status & done_status::RPCINBATCH == 0,
            _ => false,
        }
    }

    /// The DONE status, for DONE, DONEPROC and DONEINPROC.
    pub fn done(&self) -> Option<&Done> {
        match self {
            Token::Done(d) | Token::DoneProc(d) | Token::DoneInProc(d) => Some(d),
            _ => None,
        }
    }
}

/// Default bound on one token (a row with MAX values can be large; it is buffered whole).
pub const DEFAULT_MAX_TOKEN_LEN: usize = 64 << 20;

/// A row that has partly arrived: how far it was checked, so the next call resumes there.
#[derive(Debug)]
struct Partial {
    kind: u8,
    seen: usize,
    cursor: RowCursor,
}

/// What the parser carries from one token to the next in one connection's response stream.
#[derive(Debug)]
pub struct StreamState {
    metadata: Option<Arc<ColMetadata>>,
    max_token_len: usize,
    column_encryption: bool,
    data_classification_version: u8,
    partial: Option<Partial>,
}

impl Default for StreamState {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamState {
    pub fn new() -> Self {
        Self::with_max_token_len(DEFAULT_MAX_TOKEN_LEN)
    }

    /// A state that refuses any token longer than `max` bytes.
    pub fn with_max_token_len(max: usize) -> Self {
        Self {
            metadata: None,
            max_token_len: max,
            column_encryption: false,
            data_classification_version: 0,
            partial: None,
        }
    }

    /// The columns of the current result set.
    pub fn metadata(&self) -> Option<&Arc<ColMetadata>> {
        self.metadata.as_ref()
    }

    /// Sets the metadata rows are read against (e.g. cached for an fNoMetaData RPC).
    pub fn set_metadata(&mut self, metadata: Option<Arc<ColMetadata>>) {
        self.metadata = metadata;
        self.partial = None;
    }

    /// DATACLASSIFICATION layout: 2 adds sensitivity ranks. Set from FEATUREEXTACK when seen.
    pub fn set_data_classification_version(&mut self, version: u8) {
        self.data_classification_version = version;
    }

    /// Column encryption was negotiated (COLMETADATA then carries a CEK table: refused).
    pub fn set_column_encryption(&mut self, on: bool) {
        self.column_encryption = on;
    }

    pub fn max_token_len(&self) -> usize {
        self.max_token_len
    }
}

/// Reads the token at the start of `buf`. `Ok(Some((token, len)))`: the token is `buf[..len]`.
/// `Ok(None)`: it has not fully arrived; call again with the same start and more bytes.
pub fn next_token(buf: &[u8], state: &mut StreamState) -> super::Result<Option<(Token, usize)>> {
    let Some(&b) = buf.first() else {
        return Ok(None);
    };
    let result = read_token(buf, b, state);
    match &result {
        Err(Stop::More) if buf.len() >= state.max_token_len => {
            state.partial = None;
            return Err(CodecError::TooLong {
                what: "token",
                len: buf.len(),
                max: state.max_token_len,
            });
        }
        Err(Stop::More) => {}
        _ => state.partial = None,
    }
    need_more(result)
}

fn too_long(what: &'static str, len: usize, max: usize) -> Stop {
    Stop::Bad(CodecError::TooLong { what, len, max })
}

fn unsupported(what: &str) -> Stop {
    Stop::Bad(CodecError::Invalid(format!(
        "{what} token is not supported"
    )))
}

/// A token with a u16 length after its type byte; returns the body and the token length.
fn ushort_body(buf: &[u8]) -> Step<(&[u8], usize)> {
    let mut rd = Rd::at(buf, 1);
    let n = usize::from(rd.u16()?);
    let body = rd.take(n)?;
    Ok((body, rd.pos()))
}

/// A token with a u32 length after its type byte; the length is bounded before waiting for it.
fn dword_token(buf: &[u8], limit: usize, what: &'static str) -> Step<usize> {
    let mut rd = Rd::at(buf, 1);
    let n = usize::try_from(rd.u32()?).unwrap_or(usize::MAX);
    let end = n.saturating_add(5);
    if end > limit {
        return Err(too_long(what, end, limit));
    }
    rd.skip(n)?;
    Ok(rd.pos())
}

fn read_token(buf: &[u8], b: u8, state: &mut StreamState) -> Step<(Token, usize)> {
    let limit = state.max_token_len;
    match b {
        0xD1 | 0xD2 => {
            let Some(meta) = state.metadata.as_deref() else {
                return Err(Stop::Bad(CodecError::Invalid(
                    "ROW before any COLMETADATA".into(),
                )));
            };
            let mut cursor = match state.partial.take() {
                Some(p) if p.kind == b && buf.len() >= p.seen => p.cursor,
                _ => RowCursor::default(),
            };
            match scan_row(buf, meta, b == 0xD2, &mut cursor, limit) {
                Ok(end) => Ok((if b == 0xD1 { Token::Row } else { Token::NbcRow }, end)),
                Err(Stop::More) => {
                    state.partial = Some(Partial {
                        kind: b,
                        seen: buf.len(),
                        cursor,
                    });
                    Err(Stop::More)
                }
                Err(e) => Err(e),
            }
        }
        0xFD..=0xFF => {
            let mut rd = Rd::at(buf, 1);
            let done = Done::read(&mut rd)?;
            let token = match b {
                0xFD => Token::Done(done),
                0xFE => Token::DoneProc(done),
                _ => Token::DoneInProc(done),
            };
            Ok((token, rd.pos()))
        }
        0x81 => read_colmetadata_token(buf, state),
        // ERROR, INFO and LOGINACK are framed by their fields, as clients read them.
        0xAA | 0xAB => {
            let mut rd = Rd::at(buf, 3);
            let msg = ServerMessage::read(&mut rd)?;
            let token = if b == 0xAA {
                Token::Error(msg)
            } else {
                Token::Info(msg)
            };
            Ok((token, rd.pos()))
        }
        0xAD => {
            let mut rd = Rd::at(buf, 3);
            let ack = LoginAck::read(&mut rd)?;
            Ok((Token::LoginAck(ack), rd.pos()))
        }
        0xE3 => {
            let (body, len) = ushort_body(buf)?;
            let change = complete("ENVCHANGE", EnvChange::read(&mut Rd::new(body)))?;
            Ok((Token::EnvChange(change), len))
        }
        0xA9 | 0xA5 | 0xA4 | 0xED => {
            let (_, len) = ushort_body(buf)?;
            let token = match b {
                0xA9 => Token::Order,
                0xA5 => Token::ColInfo,
                0xA4 => Token::TabName,
                _ => Token::Sspi,
            };
            Ok((token, len))
        }
        0x79 => {
            let mut rd = Rd::at(buf, 1);
            Ok((Token::ReturnStatus(rd.i32()?), rd.pos()))
        }
        0xAC => {
            let (rv, len) = read_return_value(buf, limit)?;
            Ok((Token::ReturnValue(rv), len))
        }
        0xAE => {
            let mut rd = Rd::at(buf, 1);
            let acks = read_feature_acks(&mut rd, limit)?;
            for ack in &acks {
                match (ack.id, ack.data.as_slice()) {
                    (feature::COLUMN_ENCRYPTION, [version, ..]) if *version > 0 => {
                        state.column_encryption = true
                    }
                    (feature::DATA_CLASSIFICATION, [version, 1, ..]) => {
                        state.data_classification_version = *version
                    }
                    _ => {}
                }
            }
            Ok((Token::FeatureExtAck(acks), rd.pos()))
        }
        0xEE => Ok((Token::FedAuthInfo, dword_token(buf, limit, "FEDAUTHINFO")?)),
        0xE4 => Ok((
            Token::SessionState,
            dword_token(buf, limit, "SESSIONSTATE")?,
        )),
        0xA3 => {
            let mut rd = Rd::at(buf, 1);
            skip_data_classification(&mut rd, state.data_classification_version)?;
            Ok((Token::DataClassification, rd.pos()))
        }
        0x88 => Err(unsupported("ALTMETADATA")),
        0xD3 => Err(unsupported("ALTROW")),
        0x78 => Err(unsupported("OFFSET")),
        0x01 => Err(unsupported("TVP_ROW")),
        other => Err(Stop::Bad(CodecError::Invalid(format!(
            "unknown token 0x{other:02X}"
        )))),
    }
}

fn read_colmetadata_token(buf: &[u8], state: &mut StreamState) -> Step<(Token, usize)> {
    // Measure first without keeping anything, so a token still arriving costs no allocation.
    let mut rd = Rd::at(buf, 1);
    read_colmetadata(&mut rd, state.column_encryption, false)?;
    let len = rd.pos();
    let mut rd = Rd::at(buf.get(..len).ok_or(Stop::More)?, 1);
    let parsed = complete(
        "COLMETADATA",
        read_colmetadata(&mut rd, state.column_encryption, true),
    )?;
    Ok(match parsed {
        Parsed::Columns(meta) => {
            let meta = Arc::new(meta);
            state.metadata = Some(Arc::clone(&meta));
            (Token::ColMetadata(meta), len)
        }
        Parsed::NoMetadata => {
            state.metadata = None;
            (Token::NoMetadata, len)
        }
    })
}

fn skip_data_classification(rd: &mut Rd<'_>, version: u8) -> Step<()> {
    for _ in 0..2 {
        // sensitivity labels, then information types: (name, id) pairs
        let n = rd.u16()?;
        for _ in 0..n {
            rd.skip_b_varchar()?;
            rd.skip_b_varchar()?;
        }
    }
    let ranked = version >= 2;
    if ranked {
        rd.skip(4)?;
    }
    let property_len = if ranked { 8 } else { 4 };
    let columns = rd.u16()?;
    for _ in 0..columns {
        let properties = usize::from(rd.u16()?);
        rd.skip(properties * property_len)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;

//! The small tokens the gateway reads and writes itself: DONE*, ERROR/INFO, ENVCHANGE, LOGINACK
//! and FEATUREEXTACK. Parsers take the token body (after the type byte and length field).

use super::CodecError;
use super::tokenbuf::{Rd, Step, Stop};
use super::types::Collation;

/// DONE status bits (MS-TDS 2.2.7.6).
pub mod done_status {
    pub const FINAL: u16 = 0x0000;
    pub const MORE: u16 = 0x0001;
    pub const ERROR: u16 = 0x0002;
    pub const INXACT: u16 = 0x0004;
    pub const COUNT: u16 = 0x0010;
    pub const ATTN: u16 = 0x0020;
    pub const RPCINBATCH: u16 = 0x0080;
    pub const SRVERROR: u16 = 0x0100;
}

/// The body of DONE, DONEPROC and DONEINPROC (TDS 7.2+: 64-bit row count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Done {
    pub status: u16,
    pub cur_cmd: u16,
    pub row_count: u64,
}

impl Done {
    pub fn has_more(&self) -> bool {
        self.status & done_status::MORE != 0
    }

    pub fn is_error(&self) -> bool {
        self.status & (done_status::ERROR | done_status::SRVERROR) != 0
    }

    /// The server's acknowledgement of an ATTENTION (cancel).
    pub fn is_attention_ack(&self) -> bool {
        self.status & done_status::ATTN != 0
    }

    pub(crate) fn read(rd: &mut Rd<'_>) -> Step<Self> {
        Ok(Self {
            status: rd.u16()?,
            cur_cmd: rd.u16()?,
            row_count: rd.u64()?,
        })
    }
}

/// The body of an ERROR or INFO token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerMessage {
    pub number: i32,
    pub state: u8,
    /// Severity; under 10 is informational.
    pub class: u8,
    pub message: String,
    pub server: String,
    pub procedure: String,
    pub line: i32,
}

impl ServerMessage {
    pub(crate) fn read(rd: &mut Rd<'_>) -> Step<Self> {
        Ok(Self {
            number: rd.i32()?,
            state: rd.u8()?,
            class: rd.u8()?,
            message: rd.us_varchar()?,
            server: rd.b_varchar()?,
            procedure: rd.b_varchar()?,
            line: rd.i32()?,
        })
    }
}

/// The body of a LOGINACK token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginAck {
    /// 1 = SQL_TSQL.
    pub interface: u8,
    /// As the spec writes it, e.g. 0x7400_0004 for TDS 7.4 (sent most significant byte first).
    pub tds_version: u32,
    pub prog_name: String,
    /// Major, minor, build high, build low.
    pub prog_version: [u8; 4],
}

impl LoginAck {
    pub(crate) fn read(rd: &mut Rd<'_>) -> Step<Self> {
        Ok(Self {
            interface: rd.u8()?,
            tds_version: rd.u32_be()?,
            prog_name: rd.b_varchar()?,
            prog_version: rd.bytes4()?,
        })
    }
}

/// ENVCHANGE types (MS-TDS 2.2.7.9).
pub mod env_type {
    pub const DATABASE: u8 = 1;
    pub const LANGUAGE: u8 = 2;
    pub const CHARSET: u8 = 3;
    pub const PACKET_SIZE: u8 = 4;
    pub const COLLATION: u8 = 7;
    pub const BEGIN_TRAN: u8 = 8;
    pub const COMMIT_TRAN: u8 = 9;
    pub const ROLLBACK_TRAN: u8 = 10;
    pub const ENLIST_DTC: u8 = 11;
    pub const DEFECT_TRAN: u8 = 12;
    pub const MIRROR_PARTNER: u8 = 13;
    pub const PROMOTE_TRAN: u8 = 15;
    pub const TRAN_MANAGER_ADDRESS: u8 = 16;
    pub const TRAN_ENDED: u8 = 17;
    pub const RESET_ACK: u8 = 18;
    pub const USER_INSTANCE: u8 = 19;
    pub const ROUTING: u8 = 20;
    pub const ENHANCED_ROUTING: u8 = 21;
}

/// A parsed ENVCHANGE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvChange {
    Database {
        new: String,
        old: String,
    },
    Language {
        new: String,
        old: String,
    },
    Charset {
        new: String,
        old: String,
    },
    PacketSize {
        new: u32,
        old: Option<u32>,
    },
    /// `None` when the side is empty.
    Collation {
        new: Option<Collation>,
        old: Option<Collation>,
    },
    BeginTransaction {
        descriptor: u64,
    },
    CommitTransaction {
        descriptor: u64,
    },
    RollbackTransaction {
        descriptor: u64,
    },
    EnlistDtc {
        descriptor: u64,
    },
    DefectTransaction {
        descriptor: u64,
    },
    TransactionEnded {
        descriptor: u64,
    },
    MirrorPartner {
        server: String,
    },
    ResetConnectionAck,
    UserInstance {
        name: String,
    },
    Routing {
        protocol: u8,
        port: u16,
        server: String,
    },
    EnhancedRouting {
        protocol: u8,
        port: u16,
        server: String,
        database: String,
    },
    /// A type the gateway does not look into (5, 6, 16, ...); its bytes pass through.
    Other {
        kind: u8,
    },
}

fn invalid(why: String) -> Stop {
    Stop::Bad(CodecError::Invalid(why))
}

/// An 8-byte transaction descriptor (B_VARBYTE), or 0 when the side is empty.
fn descriptor(bytes: &[u8]) -> Step<u64> {
    match bytes.len() {
        0 => Ok(0),
        8 => {
            let mut d = [0u8; 8];
            d.copy_from_slice(bytes);
            Ok(u64::from_le_bytes(d))
        }
        n => Err(invalid(format!("transaction descriptor of {n} bytes"))),
    }
}

fn collation(bytes: &[u8]) -> Step<Option<Collation>> {
    match <[u8; 5]>::try_from(bytes) {
        Ok(c) => Ok(Some(Collation(c))),
        Err(_) if bytes.is_empty() => Ok(None),
        Err(_) => Err(invalid(format!("collation of {} bytes", bytes.len()))),
    }
}

fn packet_size(s: &str) -> Step<u32> {
    s.parse()
        .map_err(|_| invalid(format!("packet size {s:?} is not a number")))
}

fn routing(rd: &mut Rd<'_>, enhanced: bool) -> Step<EnvChange> {
    let len = usize::from(rd.u16()?);
    let mut v = Rd::new(rd.take(len)?);
    let protocol = v.u8()?;
    let port = v.u16()?;
    let server = v.us_varchar()?;
    let change = if enhanced {
        let database = v.us_varchar()?;
        EnvChange::EnhancedRouting {
            protocol,
            port,
            server,
            database,
        }
    } else {
        EnvChange::Routing {
            protocol,
            port,
            server,
        }
    };
    // the old value is an empty USHORT-length value
    rd.u16()?;
    Ok(change)
}

impl EnvChange {
    /// Reads an ENVCHANGE body (type byte onwards).
    pub(crate) fn read(rd: &mut Rd<'_>) -> Step<Self> {
        use env_type::*;
        let kind = rd.u8()?;
        Ok(match kind {
            DATABASE | LANGUAGE | CHARSET => {
                let (new, old) = (rd.b_varchar()?, rd.b_varchar()?);
                match kind {
                    DATABASE => EnvChange::Database { new, old },
                    LANGUAGE => EnvChange::Language { new, old },
                    _ => EnvChange::Charset { new, old },
                }
            }
            PACKET_SIZE => {
                let new = packet_size(&rd.b_varchar()?)?;
                let old = rd.b_varchar()?;
                let old = if old.is_empty() {
                    None
                } else {
                    Some(packet_size(&old)?)
                };
                EnvChange::PacketSize { new, old }
            }
            COLLATION => EnvChange::Collation {
                new: collation(rd.b_varbyte()?)?,
                old: collation(rd.b_varbyte()?)?,
            },
            BEGIN_TRAN | ENLIST_DTC | TRAN_ENDED | DEFECT_TRAN | COMMIT_TRAN | ROLLBACK_TRAN => {
                let new = descriptor(rd.b_varbyte()?)?;
                let old = descriptor(rd.b_varbyte()?)?;
                match kind {
                    BEGIN_TRAN => EnvChange::BeginTransaction { descriptor: new },
                    ENLIST_DTC => EnvChange::EnlistDtc { descriptor: new },
                    TRAN_ENDED => EnvChange::TransactionEnded { descriptor: new },
                    DEFECT_TRAN => EnvChange::DefectTransaction { descriptor: new },
                    COMMIT_TRAN => EnvChange::CommitTransaction { descriptor: old },
                    _ => EnvChange::RollbackTransaction { descriptor: old },
                }
            }
            MIRROR_PARTNER => EnvChange::MirrorPartner {
                server: rd.b_varchar()?,
            },
            RESET_ACK => EnvChange::ResetConnectionAck,
            USER_INSTANCE => EnvChange::UserInstance {
                name: rd.b_varchar()?,
            },
            ROUTING => routing(rd, false)?,
            ENHANCED_ROUTING => routing(rd, true)?,
            PROMOTE_TRAN => {
                // Its Length field covers only the type byte and a payload follows outside it.
                return Err(invalid(
                    "ENVCHANGE promote transaction (DTC) is not supported".into(),
                ));
            }
            kind => EnvChange::Other { kind },
        })
    }
}

/// FEATUREEXTACK feature ids (MS-TDS 2.2.7.11).
pub mod feature {
    pub const SESSION_RECOVERY: u8 = 0x01;
    pub const FEDAUTH: u8 = 0x02;
    pub const COLUMN_ENCRYPTION: u8 = 0x04;
    pub const GLOBAL_TRANSACTIONS: u8 = 0x05;
    pub const AZURE_SQL_SUPPORT: u8 = 0x08;
    pub const DATA_CLASSIFICATION: u8 = 0x09;
    pub const UTF8_SUPPORT: u8 = 0x0A;
    pub const AZURE_SQL_DNS_CACHING: u8 = 0x0B;
    pub const JSON_SUPPORT: u8 = 0x0D;
    pub const VECTOR_SUPPORT: u8 = 0x0E;
    pub const ENHANCED_ROUTING: u8 = 0x0F;
    pub const TERMINATOR: u8 = 0xFF;
}

/// One acknowledged feature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureAck {
    pub id: u8,
    pub data: Vec<u8>,
}

/// Reads the options of a FEATUREEXTACK (after its type byte) up to and including the
/// terminator. Each option's data is checked against `limit` before it is copied.
pub(crate) fn read_feature_acks(rd: &mut Rd<'_>, limit: usize) -> Step<Vec<FeatureAck>> {
    let mut acks = Vec::new();
    loop {
        let id = rd.u8()?;
        if id == feature::TERMINATOR {
            return Ok(acks);
        }
        let n = usize::try_from(rd.u32()?).unwrap_or(usize::MAX);
        if rd.pos().saturating_add(n) > limit {
            return Err(Stop::Bad(CodecError::TooLong {
                what: "FEATUREEXTACK option",
                len: n,
                max: limit,
            }));
        }
        let data = rd.take(n)?.to_vec();
        acks.push(FeatureAck { id, data });
    }
}

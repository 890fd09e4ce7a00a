//! The tokens of a login response (LOGINACK, ENVCHANGE, INFO/ERROR, FEATUREEXTACK, DONE):
//! what the gateway reads from a target's answer to its LOGIN7. Result sets are relayed
//! without being parsed; their end is the packet marked EOM.

use super::text;
use super::{CodecError, Result};

pub const ERROR: u8 = 0xAA;
pub const INFO: u8 = 0xAB;
pub const LOGINACK: u8 = 0xAD;
pub const FEATUREEXTACK: u8 = 0xAE;
pub const ENVCHANGE: u8 = 0xE3;
pub const DONE: u8 = 0xFD;
pub const DONEPROC: u8 = 0xFE;
pub const DONEINPROC: u8 = 0xFF;

/// An ERROR or INFO message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub number: i32,
    pub state: u8,
    pub class: u8,
    pub message: String,
    pub server: String,
    pub procedure: String,
    pub line: i32,
}

/// An environment change the gateway acts on; others are kept as their type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvChange {
    Database(String),
    PacketSize(usize),
    /// Azure SQL's redirection to the node serving the database.
    Routing {
        host: String,
        port: u16,
    },
    Other(u8),
}

/// A DONE, DONEPROC or DONEINPROC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub status: u16,
    pub cur_cmd: u16,
    pub rows: u64,
}

/// One token of a login response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Error(ServerMessage),
    Info(ServerMessage),
    EnvChange(EnvChange),
    LoginAck { tds_version: u32, program: String },
    FeatureExtAck(Vec<(u8, Vec<u8>)>),
    Done(Done),
}

/// The token at the start of `b` and the bytes it takes; `None` if `b` ends inside it.
pub fn next_login_token(b: &[u8]) -> Result<Option<(Token, usize)>> {
    let Some(&ty) = b.first() else {
        return Ok(None);
    };
    match ty {
        DONE | DONEPROC | DONEINPROC => {
            let Some(d) = b.get(1..13) else {
                return Ok(None);
            };
            let rows = u64::from_le_bytes([d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11]]);
            Ok(Some((
                Token::Done(Done {
                    status: u16::from_le_bytes([d[0], d[1]]),
                    cur_cmd: u16::from_le_bytes([d[2], d[3]]),
                    rows,
                }),
                13,
            )))
        }
        FEATUREEXTACK => {
            let mut at = 1;
            let mut acks = Vec::new();
            loop {
                let Some(&id) = b.get(at) else {
                    return Ok(None);
                };
                if id == 0xFF {
                    return Ok(Some((Token::FeatureExtAck(acks), at + 1)));
                }
                let Some(l) = b.get(at + 1..at + 5) else {
                    return Ok(None);
                };
                let n = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
                if n > 1 << 16 {
                    return Err(CodecError::TooLong {
                        what: "FEATUREEXTACK data",
                        len: n,
                        max: 1 << 16,
                    });
                }
                let Some(data) = b.get(at + 5..at + 5 + n) else {
                    return Ok(None);
                };
                acks.push((id, data.to_vec()));
                at += 5 + n;
                if acks.len() > 64 {
                    return Err(CodecError::Invalid("too many FEATUREEXTACK entries".into()));
                }
            }
        }
        ERROR | INFO | LOGINACK | ENVCHANGE => {
            let Some(l) = b.get(1..3) else {
                return Ok(None);
            };
            let len = usize::from(u16::from_le_bytes([l[0], l[1]]));
            let Some(body) = b.get(3..3 + len) else {
                return Ok(None);
            };
            let token = match ty {
                ERROR => Token::Error(message(body)?),
                INFO => Token::Info(message(body)?),
                LOGINACK => {
                    let v = body.get(1..5).ok_or(CodecError::Truncated("LOGINACK"))?;
                    let (program, _) = text::b_varchar(
                        body.get(5..).ok_or(CodecError::Truncated("LOGINACK"))?,
                        "LOGINACK program",
                    )?;
                    Token::LoginAck {
                        tds_version: u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
                        program,
                    }
                }
                _ => Token::EnvChange(env_change(body)?),
            };
            Ok(Some((token, 3 + len)))
        }
        other => Err(CodecError::Invalid(format!(
            "token {other:#04x} in a login response"
        ))),
    }
}

fn message(body: &[u8]) -> Result<ServerMessage> {
    let fixed = body.get(..6).ok_or(CodecError::Truncated("ERROR/INFO"))?;
    let (msg, a) = text::us_varchar(&body[6..], "message text")?;
    let (server, b) = text::b_varchar(
        body.get(6 + a..)
            .ok_or(CodecError::Truncated("ERROR/INFO"))?,
        "server name",
    )?;
    let (procedure, c) = text::b_varchar(
        body.get(6 + a + b..)
            .ok_or(CodecError::Truncated("ERROR/INFO"))?,
        "procedure name",
    )?;
    let line = body
        .get(6 + a + b + c..10 + a + b + c)
        .map(|l| i32::from_le_bytes([l[0], l[1], l[2], l[3]]))
        .unwrap_or(0);
    Ok(ServerMessage {
        number: i32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]),
        state: fixed[4],
        class: fixed[5],
        message: msg,
        server,
        procedure,
        line,
    })
}

fn env_change(body: &[u8]) -> Result<EnvChange> {
    let ty = *body.first().ok_or(CodecError::Truncated("ENVCHANGE"))?;
    let rest = &body[1..];
    Ok(match ty {
        1 => EnvChange::Database(text::b_varchar(rest, "ENVCHANGE database")?.0),
        4 => {
            let (v, _) = text::b_varchar(rest, "ENVCHANGE packet size")?;
            EnvChange::PacketSize(
                v.trim()
                    .parse()
                    .map_err(|_| CodecError::Invalid(format!("packet size `{v}`")))?,
            )
        }
        20 => {
            // Routing data: length, protocol (0 = TCP), port, alternate server.
            let r = rest
                .get(..5)
                .ok_or(CodecError::Truncated("ENVCHANGE routing"))?;
            if r[2] != 0 {
                return Err(CodecError::Invalid(
                    "routing to a protocol other than TCP".into(),
                ));
            }
            let port = u16::from_le_bytes([r[3], r[4]]);
            let (host, _) = text::us_varchar(&rest[5..], "ENVCHANGE routing server")?;
            EnvChange::Routing { host, port }
        }
        other => EnvChange::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::write;
    use bytes::BytesMut;

    #[test]
    fn a_login_response_reads_token_by_token_and_waits_for_what_is_cut() {
        let mut b = BytesMut::new();
        write::put_env_change_text(&mut b, 1, "sales", "master");
        write::put_env_change_text(&mut b, 4, "8000", "4096");
        write::put_info(
            &mut b,
            5701,
            2,
            0,
            "Changed database context to 'sales'.",
            "db1",
            "",
            1,
        );
        write::put_login_ack(&mut b, 0x7400_0004, "Microsoft SQL Server");
        write::put_feature_ext_ack(&mut b, &[(0x02, &[][..])]);
        write::put_done(&mut b, 0, 0, 0);
        let mut at = 0;
        let mut seen = Vec::new();
        while at < b.len() {
            // Every cut before the token's end waits for more.
            let (t, used) = next_login_token(&b[at..]).unwrap().unwrap();
            for cut in 0..used {
                assert_eq!(next_login_token(&b[at..at + cut]).unwrap(), None);
            }
            seen.push(t);
            at += used;
        }
        assert_eq!(
            seen[0],
            Token::EnvChange(EnvChange::Database("sales".into()))
        );
        assert_eq!(seen[1], Token::EnvChange(EnvChange::PacketSize(8000)));
        assert!(matches!(&seen[2], Token::Info(m) if m.number == 5701 && m.server == "db1"));
        assert!(matches!(
            &seen[3],
            Token::LoginAck {
                tds_version: 0x7400_0004,
                ..
            }
        ));
        assert_eq!(seen[4], Token::FeatureExtAck(vec![(0x02, Vec::new())]));
        assert!(matches!(seen[5], Token::Done(_)));
    }

    #[test]
    fn routing_and_errors_are_read_and_unknown_tokens_refused() {
        let mut b = BytesMut::new();
        write::put_error(
            &mut b,
            18456,
            1,
            14,
            "Login failed for user 'x'.",
            "db1",
            "",
            1,
        );
        let (t, _) = next_login_token(&b).unwrap().unwrap();
        assert!(matches!(t, Token::Error(m) if m.number == 18456 && m.class == 14));
        let mut r = vec![ENVCHANGE];
        let host = text::encode("node7.sales.example.net");
        let routing_len = 1 + 2 + 2 + host.len();
        let body_len = 1 + 2 + routing_len + 2;
        r.extend_from_slice(&(body_len as u16).to_le_bytes());
        r.push(20);
        r.extend_from_slice(&(routing_len as u16).to_le_bytes());
        r.push(0);
        r.extend_from_slice(&11000u16.to_le_bytes());
        r.extend_from_slice(&(23u16).to_le_bytes());
        r.extend(host);
        r.extend_from_slice(&0u16.to_le_bytes());
        let (t, used) = next_login_token(&r).unwrap().unwrap();
        assert_eq!(used, r.len());
        assert_eq!(
            t,
            Token::EnvChange(EnvChange::Routing {
                host: "node7.sales.example.net".into(),
                port: 11000
            })
        );
        assert!(next_login_token(&[0x81, 0, 0]).is_err());
    }
}

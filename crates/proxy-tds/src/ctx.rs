//! The session context the relay works with: a leaf the session and relay modules both use.

use std::sync::Arc;

use gateway_core::gate::SessionGate;
use gateway_core::masking::SessionMasks;
use gateway_core::services::Services;

/// What the relay needs to know about its session.
pub(crate) struct SessionCtx {
    /// Decides every request of the session (credential, then policy).
    pub gate: SessionGate,
    pub services: Arc<Services>,
    /// Packet size in force on both sides.
    pub packet_size: usize,
    /// The database the client believes it is in: the connection's name.
    pub database: String,
    /// The masking that applies to the session's results, if any.
    pub masks: Option<Arc<SessionMasks>>,
}

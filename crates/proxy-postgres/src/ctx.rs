//! The session context the relay works with: a leaf the session and relay modules both use.

use std::sync::Arc;

use gateway_core::config::ConnectionConfig;
use gateway_core::gate::SessionGate;
use gateway_core::services::Services;

use crate::cancel::HoldControl;

/// What the relay needs to know about its session.
pub(crate) struct SessionCtx {
    /// Decides every command of the session (credential, then policy).
    pub gate: SessionGate,
    pub conn: ConnectionConfig,
    pub services: Arc<Services>,
    pub max_message: usize,
    /// The statement held for approval, if any, reachable from a CancelRequest.
    pub hold: Arc<HoldControl>,
    /// The masking that applies to this session; `None` means no masking work at all.
    pub masks: Option<Arc<gateway_core::masking::SessionMasks>>,
}

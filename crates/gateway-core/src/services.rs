//! The shared services every proxy uses: one value, built once by the binary.

use std::sync::Arc;

use crate::approvals::Approvals;
use crate::audit::AuditLog;
use crate::config::Config;
use crate::identity::Verifier;
use crate::masking::MaskingEngine;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;
use crate::sql::Classifier;
use crate::store::Store;

/// Identity, policy, classification, approvals, audit and metrics, shared by all listeners.
pub struct Services {
    pub config: Arc<Config>,
    pub verifier: Verifier,
    pub policy: Arc<PolicyHandle>,
    pub classifier: Classifier,
    pub audit: AuditLog,
    pub approvals: Approvals,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// The compiled `[[masking]]` blocks; `None` when the config has none.
    pub masking: Option<Arc<MaskingEngine>>,
}

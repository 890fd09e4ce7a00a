//! `portcullis serve`: build the shared services, start the listeners and the admin API,
//! and run until SIGINT/SIGTERM.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use gateway_core::approvals::{ApprovalSettings, Approvals, WebhookNotifier};
use gateway_core::audit::AuditLog;
use gateway_core::config::{Config, Protocol};
use gateway_core::identity::Verifier;
use gateway_core::identity::builtin::BuiltinIssuer;
use gateway_core::listener::ProtocolListener;
use gateway_core::metrics::Metrics;
use gateway_core::policy::PolicyHandle;
use gateway_core::services::Services;
use gateway_core::sql::Classifier;
use gateway_core::store::{SqliteStore, Store};
use tokio::net::TcpListener;

/// Capacity of the SQL classification cache (statement shapes).
const CLASSIFIER_CACHE: usize = 10_000;

pub fn run(config: &Path) -> anyhow::Result<ExitCode> {
    init_tracing();
    let cfg = crate::load_config_with_secrets(config)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.gateway.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Install the process-wide rustls crypto provider (several dependencies bring different
/// ones; rustls refuses to guess).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The SQLite store in the config's state directory.
/// The store's database file.
pub fn store_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir().join("portcullis.db")
}

fn open_sqlite(cfg: &Config) -> anyhow::Result<SqliteStore> {
    let state = cfg.state_dir();
    crate::private::private_state(&state)?;
    let fsync = cfg.audit.durability == gateway_core::config::Durability::Fsync;
    SqliteStore::open_with(&store_path(cfg), fsync)
        .with_context(|| format!("opening the store in {}", state.display()))
}

/// The store the gateway writes (`AuditLog::start` recovers the journal into it).
pub fn open_store(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(open_sqlite(cfg)?))
}

/// The store as the CLI reads it: what a stopped gateway left only in the journal is stored
/// first, and what a running one has journaled but not yet indexed is read from the journal.
pub fn open_store_for_reading(cfg: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = open_sqlite(cfg)?;
    let journal = gateway_core::audit::journal_dir(&cfg.state_dir());
    gateway_core::audit::recover_journal(&store, &journal)
        .context("storing audit events from the journal")?;
    Ok(Arc::new(gateway_core::audit::tail::WithJournal {
        store,
        journal,
    }))
}

/// The built-in issuer, if the config trusts it.
pub fn builtin_issuer(cfg: &Config) -> anyhow::Result<Option<Arc<BuiltinIssuer>>> {
    if !cfg.identity.issuers.iter().any(|i| i.name == "builtin") {
        return Ok(None);
    }
    let issuer = BuiltinIssuer::load_or_create(&cfg.state_dir(), &cfg.builtin_issuer_url())
        .context("loading the built-in issuer's key")?;
    Ok(Some(Arc::new(issuer)))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    install_crypto_provider();
    let cfg = Arc::new(cfg);
    let sqlite = Arc::new(open_sqlite(&cfg)?);
    let store: Arc<dyn Store> = sqlite.clone();
    let anchoring = gateway_core::audit::Anchoring {
        key: gateway_core::audit::anchor::AnchorKey::load_or_create(&cfg.state_dir())
            .context("loading the audit anchor key")?,
        file: gateway_core::audit::anchor::AnchorFile::new(cfg.anchors_path()),
        every: gateway_core::config::parse_duration(&cfg.audit.anchor_every)
            .map_err(|e| anyhow::anyhow!("audit.anchor_every: {e}"))?,
    };
    let audit = AuditLog::start_anchored(
        store.clone(),
        cfg.audit.durability,
        gateway_core::audit::journal_dir(&cfg.state_dir()),
        cfg.audit.jsonl.as_ref().map(|p| cfg.resolve(p)),
        anchoring,
    )
    .context("starting the audit writer")?;
    let builtin = builtin_issuer(&cfg)?;
    let verifier = Verifier::new(&cfg.identity, builtin.clone(), store.clone())
        .context("setting up identity verification")?;
    let policy_path = cfg.resolve(&cfg.gateway.policy);
    let policy = Arc::new(PolicyHandle::load(&policy_path).map_err(|errs| {
        anyhow::anyhow!(
            "{}: invalid policy:\n  {}",
            policy_path.display(),
            errs.join("\n  ")
        )
    })?);
    let unapproved = policy.current().approver_problems(&cfg.approvals.approvers);
    if !unapproved.is_empty() {
        anyhow::bail!(
            "{}: invalid policy:\n  {}",
            policy_path.display(),
            unapproved.join("\n  ")
        );
    }
    policy.spawn_watcher();
    let metrics = Arc::new(Metrics::default());
    record_policy_changes(&policy, &audit, &metrics);
    let approvals = start_approvals(&cfg, sqlite, &audit).await?;
    let masking = if cfg.masking.is_empty() {
        None
    } else {
        let key = gateway_core::masking::load_or_create_key(&cfg.state_dir())
            .context("loading the masking key")?;
        let engine = gateway_core::masking::MaskingEngine::new(&cfg.masking, key)
            .context("compiling the [[masking]] blocks")?;
        Some(Arc::new(engine))
    };
    let services = Arc::new(Services {
        config: cfg.clone(),
        verifier,
        policy,
        classifier: Classifier::new(CLASSIFIER_CACHE),
        audit: audit.clone(),
        approvals,
        store,
        metrics,
        masking,
    });

    for l in &cfg.listeners {
        let listener = TcpListener::bind(&l.listen)
            .await
            .with_context(|| format!("binding {} listener on {}", l.protocol.as_str(), l.listen))?;
        let tls = match &l.tls {
            Some(t) => Some(load_tls(&cfg.resolve(&t.cert), &cfg.resolve(&t.key))?),
            None => None,
        };
        let tls_required = l.tls.as_ref().is_some_and(|t| t.required);
        let front: Arc<dyn ProtocolListener> = match l.protocol {
            Protocol::Postgres => proxy_postgres::PgProxy::new(services.clone(), tls, tls_required),
            Protocol::Tds => {
                // TLS inside PRELOGIN is TLS 1.2, as SQL Server negotiates it there: FreeTDS
                // loses its last handshake flight under TLS 1.3. TDS 8.0 strict gets both.
                let prelogin = match &l.tls {
                    Some(t) => Some(load_tls_versions(
                        &cfg.resolve(&t.cert),
                        &cfg.resolve(&t.key),
                        &[&rustls::version::TLS12],
                    )?),
                    None => None,
                };
                proxy_tds::TdsProxy::new(services.clone(), prelogin, tls, tls_required)
            }
            Protocol::Ssh => {
                proxy_ssh::SshProxy::new(services.clone()).context("setting up the ssh listener")?
            }
            Protocol::Http => proxy_http::HttpProxy::new(services.clone(), tls),
            Protocol::Kube => proxy_kube::proxy(services.clone(), tls),
        };
        let protocol = front.protocol().as_str();
        tracing::info!(listen = %l.listen, detail = %front.ready_detail(), "{protocol} listener ready");
        tokio::spawn(async move {
            if let Err(e) = front.serve_on(listener).await {
                tracing::error!(error = %e, "{protocol} listener stopped");
            }
        });
    }

    let admin = TcpListener::bind(&cfg.gateway.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener on {}", cfg.gateway.admin_listen))?;
    tracing::info!(listen = %cfg.gateway.admin_listen, "admin listener ready");
    let app = crate::admin::router(services.clone(), builtin);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, app).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    });

    shutdown_signal().await;
    tracing::info!("shutting down: flushing audit");
    audit.shutdown().await;
    Ok(())
}

/// The approvals service: settings and webhooks from `[approvals]`, requests in the store.
async fn start_approvals(
    cfg: &Config,
    store: Arc<gateway_core::store::SqliteStore>,
    audit: &AuditLog,
) -> anyhow::Result<Approvals> {
    let settings = ApprovalSettings::from_config(&cfg.approvals, &node_name())
        .map_err(|e| anyhow::anyhow!(e))?;
    let notifier = WebhookNotifier::from_config(&cfg.approvals.webhooks)
        .map_err(|e| anyhow::anyhow!("approvals.webhooks: {e}"))?;
    Approvals::start(store, settings, Arc::new(audit.clone()), notifier)
        .await
        .context("starting approvals")
}

/// This gateway's name among replicas sharing a store: `PORTCULLIS_NODE`, else the host name.
fn node_name() -> String {
    std::env::var("PORTCULLIS_NODE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "local".to_string())
}

/// Each policy version that takes effect is counted and written to audit with its rule ids.
fn record_policy_changes(policy: &Arc<PolicyHandle>, audit: &AuditLog, metrics: &Arc<Metrics>) {
    let mut rx = policy.subscribe();
    let audit = audit.clone();
    let metrics = metrics.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let (version, ids) = {
                let engine = rx.borrow_and_update();
                (engine.version(), engine.policy_ids())
            };
            metrics
                .policy_reloads_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut ev =
                gateway_core::audit::AuditEvent::new(gateway_core::audit::EventKind::Policy, "");
            ev.detail = Some(serde_json::json!({ "version": version, "policies": ids }));
            if let Err(e) = audit.record(ev).await {
                tracing::error!(error = %e, "could not record the policy change in audit");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

fn load_tls(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    load_tls_versions(cert, key, rustls::DEFAULT_VERSIONS)
}

/// A server configuration offering only `versions`.
fn load_tls_versions(
    cert: &Path,
    key: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("opening {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?,
    ))
    .with_context(|| format!("reading the private key from {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_protocol_versions(versions)
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("building the TLS configuration")?;
    Ok(Arc::new(config))
}

//! `portcullis audit tail|query|verify`, `sessions list` and `replay`: read the store directly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use gateway_core::audit::{AuditEvent, EventFilter, EventKind, Verdict};

use gateway_core::timefmt::rfc3339_micros;

#[derive(Args, Clone)]
pub struct Filters {
    #[arg(long, short, env = "PORTCULLIS_CONFIG")]
    config: PathBuf,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    /// Only this identity (`issuer/subject` or subject).
    #[arg(long)]
    identity: Option<String>,
    /// Only this connection.
    #[arg(long)]
    connection: Option<String>,
    /// Only events of this approval.
    #[arg(long)]
    approval: Option<String>,
    /// Only this kind (session_start, session_end, auth_failed, command, command_end, access_key, policy).
    #[arg(long)]
    kind: Option<String>,
    /// At most this many (the newest).
    #[arg(long, short = 'n')]
    limit: Option<usize>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print the newest events and, with --follow, new ones as they arrive.
    Tail {
        #[command(flatten)]
        filters: Filters,
        #[arg(long, short)]
        follow: bool,
    },
    /// Print the events matching the filters.
    Query {
        #[command(flatten)]
        filters: Filters,
    },
    /// Check the hash chain end to end (store and journal) and against its signed anchors,
    /// writing nothing; exit 1 at the first edited, deleted, reordered or cut event.
    Verify {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        /// The anchors file (default: `audit.anchors` of the config).
        #[arg(long)]
        anchors: Option<PathBuf>,
        /// The anchor public key to trust (default: the state directory's
        /// `audit-anchor.pub`; pass a copy kept elsewhere).
        #[arg(long)]
        anchor_key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// List recorded sessions, newest last.
    List {
        #[arg(long, short, env = "PORTCULLIS_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        identity: Option<String>,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long, short = 'n')]
        limit: Option<usize>,
    },
}

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long, short, env = "PORTCULLIS_CONFIG")]
    config: PathBuf,
    /// Session id (from `sessions list`).
    session: String,
    /// Replay in real time scaled by this factor (2 = twice as fast); 0 prints at once.
    /// Terminal sessions play in real time unless told otherwise; transcripts print at once.
    #[arg(long)]
    speed: Option<f64>,
    /// Print everything at once, without the recorded pauses.
    #[arg(long)]
    no_wait: bool,
}

fn parse_kind(s: &str) -> anyhow::Result<EventKind> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| anyhow::anyhow!("unknown event kind `{s}`"))
}

fn filter_of(f: &Filters) -> anyhow::Result<EventFilter> {
    Ok(EventFilter {
        session: f.session.clone(),
        identity: f.identity.clone(),
        connection: f.connection.clone(),
        kind: f.kind.as_deref().map(parse_kind).transpose()?,
        approval: f.approval.clone(),
        limit: f.limit,
        ..Default::default()
    })
}

pub fn run_audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Query { filters } => {
            let store = open(&filters.config)?;
            for ev in store.query_events(&filter_of(&filters)?)? {
                print_event(&ev, filters.json);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Tail { filters, follow } => {
            let store = open(&filters.config)?;
            let mut filter = filter_of(&filters)?;
            filter.limit = Some(filters.limit.unwrap_or(20));
            let mut last = 0;
            loop {
                for ev in store.query_events(&filter)? {
                    last = last.max(ev.seq);
                    print_event(&ev, filters.json);
                }
                if !follow {
                    return Ok(ExitCode::SUCCESS);
                }
                filter.after_seq = Some(last);
                filter.limit = None;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        AuditCommand::Verify {
            config,
            anchors,
            anchor_key,
        } => verify(&config, anchors, anchor_key),
    }
}

/// `audit verify`: reads the store, the journal and the anchors; writes nothing.
fn verify(
    config: &std::path::Path,
    anchors: Option<PathBuf>,
    anchor_key: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use gateway_core::audit::anchor;
    let cfg = crate::load_config(config)?;
    let state = cfg.state_dir();
    let anchors_path = anchors.unwrap_or_else(|| cfg.anchors_path());
    let anchors = anchor::read_anchors(&anchors_path)?;
    let key_path = anchor_key.unwrap_or_else(|| state.join(anchor::PUBLIC_KEY_FILE));
    let trusted = if key_path.exists() || !anchors.is_empty() {
        vec![anchor::read_public_key(&key_path)?]
    } else {
        Vec::new()
    };
    let store_path = crate::serve::store_path(&cfg);
    let v = gateway_core::audit::verify::verify(
        |probes| gateway_core::store::sqlite::verify_read_only(&store_path, probes),
        &gateway_core::audit::journal_dir(&state),
        &anchors,
        &trusted,
    )?;
    if let Some(torn) = &v.torn {
        eprintln!("note: {torn}");
    }
    if let Some((seq, what)) = v.problem {
        eprintln!("audit chain BROKEN at event {seq}: {what}");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "audit chain intact: {} events verified ({} in the store, {} in the journal)",
        v.events, v.stored, v.journaled
    );
    match &v.last_anchor {
        Some(a) => println!(
            "{} anchors match; the newest, signed at {} by key {}, covers event {}{}",
            v.anchors,
            rfc3339_micros(a.time_us),
            a.key,
            a.seq,
            match &v.head {
                Some((head, _)) if *head > a.seq => {
                    format!(" (events {} to {head} are newer than it)", a.seq + 1)
                }
                _ => String::new(),
            }
        ),
        None => println!(
            "no anchors yet in {}: the gateway signs the head every {} and at shutdown; \
             until then a cut tail would go unnoticed",
            anchors_path.display(),
            cfg.audit.anchor_every
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn open(
    config: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn gateway_core::store::Store>> {
    let cfg = crate::load_config(config)?;
    crate::serve::open_store_for_reading(&cfg)
}

fn verdict_str(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Allow) => "allow",
        Some(Verdict::Deny) => "DENY",
        Some(Verdict::Review) => "REVIEW",
        None => "-",
    }
}

fn print_event(ev: &AuditEvent, json: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(ev) {
            println!("{s}");
        }
        return;
    }
    let who = ev
        .identity
        .as_ref()
        .map(|i| i.principal.as_str())
        .unwrap_or("-");
    let mut line = format!(
        "{:>6} {} {:<13} {}",
        ev.seq,
        rfc3339_micros(ev.time_us),
        ev.kind.as_str(),
        if ev.session.is_empty() {
            "-"
        } else {
            &ev.session
        }
    );
    match ev.kind {
        EventKind::Command => {
            line.push_str(&format!(
                " #{} {} {} {}",
                ev.command.unwrap_or(0),
                verdict_str(ev.verdict),
                ev.action.as_deref().unwrap_or("-"),
                ev.statement.as_deref().unwrap_or("").replace('\n', " ")
            ));
            if !ev.policies.is_empty() {
                line.push_str(&format!(" [{}]", ev.policies.join(",")));
            }
        }
        EventKind::CommandEnd => {
            line.push_str(&format!(" #{}", ev.command.unwrap_or(0)));
            if let Some(r) = ev.rows {
                line.push_str(&format!(" rows={r}"));
            }
            if let Some(d) = ev.duration_us {
                line.push_str(&format!(" {:.3}ms", d as f64 / 1000.0));
            }
        }
        _ => {
            line.push_str(&format!(
                " {who} {}",
                ev.connection.as_deref().unwrap_or("-")
            ));
            if let Some(v) = ev.verdict {
                line.push_str(&format!(" {}", verdict_str(Some(v))));
            }
        }
    }
    if let Some(r) = &ev.reason {
        line.push_str(&format!(" reason=\"{r}\""));
    }
    if let Some(e) = &ev.error {
        line.push_str(&format!(" error=\"{e}\""));
    }
    println!("{line}");
}

pub fn run_sessions(cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    let SessionsCommand::List {
        config,
        identity,
        connection,
        limit,
    } = cmd;
    let store = open(&config)?;
    let starts = store.query_events(&EventFilter {
        kind: Some(EventKind::SessionStart),
        identity,
        connection,
        limit,
        ..Default::default()
    })?;
    println!(
        "{:<28} {:<24} {:<28} {:<12} client",
        "session", "started", "identity", "connection"
    );
    for ev in starts {
        println!(
            "{:<28} {:<24} {:<28} {:<12} {}",
            ev.session,
            rfc3339_micros(ev.time_us),
            ev.identity
                .as_ref()
                .map(|i| i.principal.as_str())
                .unwrap_or("-"),
            ev.connection.as_deref().unwrap_or("-"),
            ev.client.as_deref().unwrap_or("-"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.config)?;
    let events = store.query_events(&EventFilter {
        session: Some(args.session.clone()),
        ..Default::default()
    })?;
    let start = events
        .iter()
        .find(|e| e.kind == EventKind::SessionStart)
        .with_context(|| format!("no recorded session `{}`", args.session))?;
    if start.protocol.as_deref() == Some("ssh") {
        let speed = if args.no_wait {
            0.0
        } else {
            args.speed.unwrap_or(1.0)
        };
        return replay_terminal(&args.config, &events, speed);
    }
    let speed = if args.no_wait {
        0.0
    } else {
        args.speed.unwrap_or(0.0)
    };
    let t0 = start.time_us;
    let conn = start.connection.clone().unwrap_or_default();
    println!(
        "-- session {} by {} on {} from {} at {}",
        start.session,
        start
            .identity
            .as_ref()
            .map(|i| i.principal.as_str())
            .unwrap_or("-"),
        conn,
        start.client.as_deref().unwrap_or("-"),
        rfc3339_micros(t0)
    );
    let mut prev = t0;
    for ev in &events {
        if speed > 0.0 && ev.time_us > prev {
            std::thread::sleep(Duration::from_micros(
                ((ev.time_us - prev) as f64 / speed) as u64,
            ));
        }
        prev = ev.time_us;
        let at = (ev.time_us - t0) as f64 / 1e6;
        match ev.kind {
            EventKind::Command => {
                println!(
                    "[+{at:>9.3}s] {conn}=> {}",
                    ev.statement.as_deref().unwrap_or("").trim_end()
                );
                if ev.verdict != Some(Verdict::Allow) {
                    println!(
                        "{:>14} {} by [{}]: {}",
                        "--",
                        verdict_str(ev.verdict),
                        ev.policies.join(", "),
                        ev.reason.as_deref().unwrap_or("")
                    );
                }
            }
            EventKind::CommandEnd => {
                let mut s = format!("{:>14} ", "--");
                // An HTTP request's end: its status and the response's size.
                let http = ev.detail.as_ref().and_then(|d| {
                    let status = d.get("status")?.as_u64()?;
                    let bytes = d.get("response_bytes").and_then(|b| b.as_u64());
                    Some((status, bytes))
                });
                match (ev.rows, &ev.error) {
                    (_, Some(e)) => s.push_str(&format!("ERROR {e}")),
                    (None, None) if http.is_some() => {
                        if let Some((status, bytes)) = http {
                            s.push_str(&format!("HTTP {status}"));
                            if let Some(b) = bytes {
                                s.push_str(&format!(", {b} bytes"));
                            }
                        }
                    }
                    (Some(r), None) => {
                        s.push_str(&format!("{r} row{}", if r == 1 { "" } else { "s" }))
                    }
                    (None, None) => s.push_str("ok"),
                }
                if let Some(d) = ev.duration_us {
                    s.push_str(&format!(" ({:.3} ms)", d as f64 / 1000.0));
                }
                if let Some(code) = ev.detail.as_ref().and_then(|d| d.get("exit_status")) {
                    s.push_str(&format!(", exit status {code}"));
                }
                println!("{s}");
                // An HTTP exchange, recorded: headers and the heads of its bodies.
                if let Some(x) = ev.detail.as_ref().and_then(|d| d.get("exchange")) {
                    print_exchange(x);
                }
                // An exec's terminal, recorded: its output, as it was shown.
                let rec = ev.detail.as_ref().and_then(|d| d.get("recording"));
                if let Some(rel) = rec.and_then(|r| r.as_str()) {
                    let state = crate::load_config(&args.config)?.state_dir();
                    play_recording(&state, rel, speed, &mut std::io::stdout().lock())?;
                }
            }
            EventKind::SessionEnd => {
                println!(
                    "-- session ended at +{at:.3}s{}",
                    ev.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print a recorded HTTP exchange: `>` lines for the request, `<` for the response.
fn print_exchange(x: &serde_json::Value) {
    for (side, mark) in [("request", '>'), ("response", '<')] {
        let part = &x[side];
        for h in part["headers"].as_array().into_iter().flatten() {
            println!(
                "{:>14} {mark} {}: {}",
                "",
                h[0].as_str().unwrap_or(""),
                h[1].as_str().unwrap_or("")
            );
        }
        let body = &part["body"];
        let cut = if body["truncated"] == true {
            " …"
        } else {
            ""
        };
        if let Some(t) = body["text"].as_str().filter(|t| !t.is_empty()) {
            for line in t.lines() {
                println!("{:>14} {mark} {line}", "");
            }
            if !cut.is_empty() {
                println!("{:>14} {mark}{cut}", "");
            }
        } else if let Some(b) = body["base64"].as_str().filter(|b| !b.is_empty()) {
            println!("{:>14} {mark} (binary, base64) {b}{cut}", "");
        } else if let Some(w) = body["withheld"].as_str() {
            println!("{:>14} {mark} ({w})", "");
        }
    }
}

/// Replay an SSH session: each exec with its exit status, each recorded terminal with its
/// timing (scaled by `speed`; 0 plays at once). Terminal output goes to stdout byte for
/// byte; the gateway's own notes go to stderr.
fn replay_terminal(
    config: &std::path::Path,
    events: &[gateway_core::audit::AuditEvent],
    speed: f64,
) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(config)?;
    let state = cfg.state_dir();
    let mut out = std::io::stdout().lock();
    for ev in events {
        match ev.kind {
            EventKind::SessionStart => eprintln!(
                "-- ssh session {} by {} on {} at {}",
                ev.session,
                ev.identity
                    .as_ref()
                    .map(|i| i.principal.as_str())
                    .unwrap_or("-"),
                ev.connection.as_deref().unwrap_or("-"),
                rfc3339_micros(ev.time_us)
            ),
            EventKind::Command => eprintln!(
                "-- {} {}: {}{}",
                ev.action.as_deref().unwrap_or("-"),
                verdict_str(ev.verdict),
                ev.statement.as_deref().unwrap_or(""),
                ev.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            EventKind::CommandEnd => {
                let detail = ev.detail.clone().unwrap_or_default();
                if let Some(rel) = detail.get("recording").and_then(|r| r.as_str()) {
                    play_recording(&state, rel, speed, &mut out)?;
                }
                eprintln!(
                    "-- exit status {}, {} bytes out",
                    detail
                        .get("exit_status")
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "-".into()),
                    detail
                        .get("bytes_out")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(0)
                );
            }
            EventKind::SessionEnd => eprintln!("-- session ended"),
            _ => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Play the terminal output of recording `rel` (under `state`) to `out`, with its pauses
/// scaled by `speed` (0 plays at once).
fn play_recording(
    state: &std::path::Path,
    rel: &str,
    speed: f64,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let path = gateway_core::recording::path_in(state, rel)
        .with_context(|| format!("bad recording reference `{rel}`"))?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (_, cast) = gateway_core::recording::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    let mut prev = 0.0f64;
    for c in cast {
        if c.code != "o" {
            continue;
        }
        if speed > 0.0 && c.time > prev {
            out.flush()?;
            std::thread::sleep(Duration::from_secs_f64((c.time - prev) / speed));
        }
        prev = c.time;
        out.write_all(c.data.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

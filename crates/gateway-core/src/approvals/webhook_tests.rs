//! Webhook tests against a real HTTP receiver on a loopback port: both body formats, the
//! signature, retries of a failing receiver, and a receiver that is down.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::model::{ApprovalKind, ApprovalRequest, State, Vote, fingerprint};
use super::webhook::{
    Notice, SIGNATURE_HEADER, WebhookNotifier, WebhookOptions, WebhookStats, WebhookTarget,
    signature,
};
use crate::audit::event::IdentityRecord;
use crate::config::WebhookFormat;
use crate::identity::Identity;

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Hit {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A minimal HTTP/1.1 receiver: answers each request with the next scripted status (200
/// when the script is empty) and keeps what it received.
struct Receiver {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(
            script.iter().copied().collect::<VecDeque<u16>>(),
        ));
        let (h, s) = (hits.clone(), script.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, h.clone(), s.clone()));
            }
        });
        Receiver { url, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .unwrap_or("")
        .split(' ')
        .nth(1)
        .unwrap_or("")
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    hits.lock().unwrap().push(Hit {
        path,
        headers,
        body,
    });
    let status = script.lock().unwrap().pop_front().unwrap_or(200);
    let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn fast() -> WebhookOptions {
    WebhookOptions {
        queue: 16,
        attempts: 5,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        timeout: Duration::from_secs(5),
    }
}

fn target(url: String, format: WebhookFormat, secret: Option<&str>) -> WebhookTarget {
    WebhookTarget {
        url,
        format,
        secret: secret.map(str::to_string),
    }
}

/// Wait (bounded, so a bug fails instead of hanging) until the counters satisfy `done`.
async fn until(n: &WebhookNotifier, done: impl Fn(WebhookStats) -> bool) -> WebhookStats {
    for _ in 0..2_000 {
        if done(n.stats()) {
            return n.stats();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("webhook counters never got there: {:?}", n.stats());
}

fn pending() -> ApprovalRequest {
    let mut requester = IdentityRecord::from(&Identity::for_tests("entra", "alice", &["dev"]));
    requester.display_name = Some("Alice <a@example.com>".into());
    ApprovalRequest {
        id: "apr_0123456789ab".into(),
        version: 0,
        kind: ApprovalKind::OneTime {
            fingerprint: fingerprint("delete from t where a < 3", &[]),
            statement: "delete from t where a < 3 and b = '```'".into(),
            session: "s1".into(),
            parameters: Vec::new(),
            tables: Vec::new(),
            node: "n1".into(),
            grant: false,
        },
        requester,
        connection: "orders".into(),
        action: "sql.write".into(),
        reason: Some("cleanup & fix".into()),
        policies: vec!["deletes".into()],
        required: 2,
        approver_groups: vec!["dba".into()],
        votes: Vec::new(),
        state: State::Pending,
        created_us: 1,
        expires_us: 2,
        window_until_us: None,
        closed_us: None,
        closed_by: None,
        closed_reason: None,
        used_us: None,
        used_by: None,
    }
}

fn approved() -> ApprovalRequest {
    let mut r = pending();
    r.state = State::Approved;
    r.votes.push(Vote {
        who: "entra/bob".into(),
        subject: "bob".into(),
        issuer: "entra".into(),
        display_name: None,
        at_us: 3,
        approve: true,
        reason: None,
    });
    r
}

#[tokio::test]
async fn json_and_slack_bodies_are_delivered_and_json_is_signed() {
    let rx = Receiver::start(&[]).await;
    let n = WebhookNotifier::start(
        vec![
            target(
                format!("{}/json", rx.url),
                WebhookFormat::Json,
                Some("s3cret"),
            ),
            target(format!("{}/slack", rx.url), WebhookFormat::Slack, None),
        ],
        fast(),
    )
    .unwrap();
    n.notify(Notice::new(&pending()));
    n.notify(Notice::new(&approved()));
    let stats = until(&n, |s| s.delivered == 4).await;
    assert_eq!((stats.failed, stats.dropped), (0, 0));
    let hits = rx.hits();
    let json: Vec<&Hit> = hits.iter().filter(|h| h.path == "/json").collect();
    let slack: Vec<&Hit> = hits.iter().filter(|h| h.path == "/slack").collect();
    assert_eq!((json.len(), slack.len()), (2, 2));

    // Generic JSON, in order, each signed over its exact body.
    assert_eq!(json[0].json()["event"], "approval.requested");
    assert_eq!(json[0].json()["request"]["id"], "apr_0123456789ab");
    assert_eq!(json[0].json()["request"]["kind"]["type"], "one_time");
    assert_eq!(json[1].json()["event"], "approval.approved");
    for h in &json {
        assert_eq!(h.header("content-type"), Some("application/json"));
        assert_eq!(
            h.header(SIGNATURE_HEADER),
            Some(signature("s3cret", &h.body).as_str())
        );
    }
    assert!(slack[0].header(SIGNATURE_HEADER).is_none());

    // Slack: the id, who, where, what, and the command to approve; markup escaped.
    let text = slack[0].json()["text"].as_str().unwrap().to_string();
    for part in [
        "apr_0123456789ab",
        "Alice &lt;a@example.com&gt; (entra/alice)",
        "`orders`",
        "delete from t where a &lt; 3",
        "Reason: cleanup &amp; fix",
        "Needs 2 approvals from dba",
        "`portcullis approvals approve apr_0123456789ab`",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    assert_eq!(
        text.matches("```").count(),
        2,
        "the statement cannot close the code block: {text}"
    );
    let done = slack[1].json()["text"].as_str().unwrap().to_string();
    assert!(
        done.starts_with("approval apr_0123456789ab was approved by entra/bob"),
        "{done}"
    );
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_takes_the_notice() {
    let rx = Receiver::start(&[500, 503, 429]).await;
    let n = WebhookNotifier::start(
        vec![target(rx.url.clone(), WebhookFormat::Json, None)],
        fast(),
    )
    .unwrap();
    n.notify(Notice::new(&pending()));
    let stats = until(&n, |s| s.delivered == 1).await;
    assert_eq!(stats.failed, 0);
    assert_eq!(rx.hits().len(), 4, "three refusals, then delivered");
}

#[tokio::test]
async fn retries_stop_after_the_last_try_and_a_4xx_is_final() {
    let rx = Receiver::start(&[500, 500, 500, 400]).await;
    let mut opts = fast();
    opts.attempts = 3;
    let n = WebhookNotifier::start(
        vec![target(rx.url.clone(), WebhookFormat::Slack, None)],
        opts,
    )
    .unwrap();
    n.notify(Notice::new(&pending()));
    until(&n, |s| s.failed == 1).await;
    assert_eq!(rx.hits().len(), 3, "three tries");
    n.notify(Notice::new(&approved()));
    until(&n, |s| s.failed == 2).await;
    assert_eq!(rx.hits().len(), 4, "a 400 is not retried");
    assert_eq!(n.stats().delivered, 0);
}

#[tokio::test]
async fn a_receiver_that_is_down_counts_failures_and_never_blocks() {
    // A port that was just free: connecting to it is refused.
    let url = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut opts = fast();
    opts.queue = 1;
    opts.attempts = 3;
    let n = WebhookNotifier::start(vec![target(url, WebhookFormat::Json, None)], opts).unwrap();
    // On this single-threaded runtime the delivery task cannot run until we await: one
    // notice fits the queue and the others are dropped, and `notify` returned each time.
    for _ in 0..5 {
        n.notify(Notice::new(&pending()));
    }
    assert_eq!(n.stats().dropped, 4);
    let stats = until(&n, |s| s.failed == 1).await;
    assert_eq!((stats.delivered, stats.dropped), (0, 4));
}

#[tokio::test]
async fn no_hooks_means_no_notifier() {
    assert!(WebhookNotifier::from_config(&[]).unwrap().is_none());
}

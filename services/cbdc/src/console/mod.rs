//! `cbdc console`: the central bank's console, a web page for the administrator. It runs
//! where the administrator's credentials are (it calls the central bank's `Audit` with the
//! administrator's TLS certificate every second) and shows, live: supply (issued, redeemed,
//! outstanding), each ledger's outstanding value by the books and by its checkpoint, value in
//! flight, whether it balances, how old its checkpoint is, its transfers per second (from its
//! audit log's growth) and the value flowing in and out of it.
//!
//! Who may look: whoever holds the console's token, a 256-bit secret in a file of mode 0600
//! made on first start (`--token-file`). Logging in with it sets a session cookie (random,
//! `HttpOnly`, `SameSite=Strict`, 8 hours); a wrong token is refused, and after
//! [`FAILURES_MAX`] failures within a minute every login waits out the minute. The console
//! listens on loopback by default and its pages load nothing from outside it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cbdc_proto::v1;
use serde_json::{Value, json};

use crate::client::Dial;

/// Failed logins within a minute before logins wait.
pub const FAILURES_MAX: usize = 10;
/// Sessions at once (the oldest goes first).
const SESSIONS_MAX: usize = 16;
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Audits kept (at one a second, ten minutes).
const SAMPLES_MAX: usize = 600;
/// Rates are measured over at least this long.
const RATE_WINDOW_MS: u64 = 5_000;
/// Largest login body read.
const LOGIN_BODY_MAX: usize = 1024;
const COOKIE: &str = "cbdc_console";

struct Sample {
    at_ms: u64,
    audit: v1::AuditResponse,
}

struct Inner {
    token: String,
    network: String,
    sessions: Mutex<HashMap<String, Instant>>,
    failures: Mutex<VecDeque<Instant>>,
    samples: Mutex<VecDeque<Sample>>,
    error: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct Console(Arc<Inner>);

fn now_ms() -> u64 {
    crate::cli::now_ms()
}

/// Text for HTML.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn yuan(text: &str) -> f64 {
    cbdc_core::Amount::parse(text).map_or(0.0, |a| a.fen() as f64 / 100.0)
}

impl Console {
    /// A console for `network` whose login token is `token`.
    pub fn new(network: &str, token: String) -> Console {
        Console(Arc::new(Inner {
            token,
            network: network.to_string(),
            sessions: Mutex::default(),
            failures: Mutex::default(),
            samples: Mutex::default(),
            error: Mutex::default(),
        }))
    }

    /// Reads the central bank's audit through `dial` every `interval`, for ever.
    pub async fn poll(self, dial: Dial, interval: Duration) {
        let mut client = None;
        loop {
            if client.is_none() {
                match crate::client::issuance(&dial).await {
                    Ok(c) => client = Some(c),
                    Err(e) => *self.0.error.lock().expect("lock") = Some(e),
                }
            }
            if let Some(c) = client.as_mut() {
                match c.audit(v1::AuditRequest {}).await {
                    Ok(r) => {
                        let mut samples = self.0.samples.lock().expect("lock");
                        if samples.len() == SAMPLES_MAX {
                            samples.pop_front();
                        }
                        samples.push_back(Sample {
                            at_ms: now_ms(),
                            audit: r.into_inner(),
                        });
                        *self.0.error.lock().expect("lock") = None;
                    }
                    Err(s) => {
                        *self.0.error.lock().expect("lock") =
                            Some(format!("the central bank: {}", crate::client::status(&s)));
                        client = None;
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn session(&self, headers: &HeaderMap) -> bool {
        let Some(id) = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_string)
            })
        else {
            return false;
        };
        let mut sessions = self.0.sessions.lock().expect("lock");
        sessions.retain(|_, at| at.elapsed() < SESSION_TTL);
        sessions.contains_key(&id)
    }

    fn login(&self, token: &str) -> Result<String, (StatusCode, &'static str)> {
        let mut failures = self.0.failures.lock().expect("lock");
        while failures
            .front()
            .is_some_and(|t| t.elapsed() > Duration::from_secs(60))
        {
            failures.pop_front();
        }
        if failures.len() >= FAILURES_MAX {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins: try again in a minute.",
            ));
        }
        if !same(token.trim().as_bytes(), self.0.token.as_bytes()) {
            failures.push_back(Instant::now());
            return Err((StatusCode::UNAUTHORIZED, "That is not the console's token."));
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let mut sessions = self.0.sessions.lock().expect("lock");
        if sessions.len() >= SESSIONS_MAX
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Instant::now());
        Ok(id)
    }

    /// What the page shows: the latest audit, rates over the last few seconds, and recent
    /// history.
    pub fn state(&self) -> Value {
        let samples = self.0.samples.lock().expect("lock");
        let error = self.0.error.lock().expect("lock").clone();
        let Some(last) = samples.back() else {
            return json!({"network": self.0.network, "error": error.unwrap_or_else(|| "waiting for the first audit".into())});
        };
        let base = samples
            .iter()
            .rev()
            .find(|s| last.at_ms.saturating_sub(s.at_ms) >= RATE_WINDOW_MS)
            .or(samples.front())
            .expect("not empty");
        let ledgers: Vec<Value> = last
            .audit
            .ledgers
            .iter()
            .map(|l| {
                let before = base
                    .audit
                    .ledgers
                    .iter()
                    .find(|b| b.ledger_id == l.ledger_id);
                let secs = last.at_ms.saturating_sub(base.at_ms) as f64 / 1000.0;
                let rate = |now: f64, then: Option<f64>| match then {
                    Some(t) if secs > 0.0 => ((now - t) / secs).max(0.0),
                    _ => 0.0,
                };
                json!({
                    "ledger": l.ledger_id,
                    "books": l.outstanding_books,
                    "reported": l.outstanding_reported,
                    "in_flight": l.in_flight_in,
                    "balanced": l.balanced,
                    "fault": l.fault,
                    "checkpoint_size": l.checkpoint_size,
                    "checkpoint_age_s": (l.checkpoint_timestamp_ms > 0)
                        .then(|| last.at_ms.saturating_sub(l.checkpoint_timestamp_ms) as f64 / 1000.0),
                    "transfers_per_s": rate(l.checkpoint_size as f64, before.map(|b| b.checkpoint_size as f64)),
                    "in_per_s": rate(yuan(&l.received), before.map(|b| yuan(&b.received))),
                    "out_per_s": rate(yuan(&l.sent), before.map(|b| yuan(&b.sent))),
                })
            })
            .collect();
        let history: Vec<Value> = samples
            .iter()
            .rev()
            .take(120)
            .map(|s| {
                json!({"at_ms": s.at_ms, "outstanding": yuan(&s.audit.outstanding),
                       "log_entries": s.audit.ledgers.iter().map(|l| l.checkpoint_size).sum::<u64>()})
            })
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        json!({
            "network": self.0.network,
            "at_ms": last.at_ms,
            "error": error,
            "issued": last.audit.issued,
            "redeemed": last.audit.redeemed,
            "outstanding": last.audit.outstanding,
            "balanced": last.audit.balanced,
            "ledgers": ledgers,
            "history": history,
        })
    }

    /// The console's pages.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/api/state", get(state))
            .route(
                "/console.js",
                get(|| async { private("text/javascript; charset=utf-8", SCRIPT) }),
            )
            .route(
                "/console.css",
                get(|| async { private("text/css; charset=utf-8", STYLE) }),
            )
            .with_state(self)
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn private(content_type: &'static str, body: impl IntoResponse) -> Response {
    cbdc_runtime::web::private(content_type, CSP, body)
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let page = LOGIN.replace("{message}", message);
    (status, private("text/html; charset=utf-8", page)).into_response()
}

async fn index(State(c): State<Console>, headers: HeaderMap) -> Response {
    if !c.session(&headers) {
        return login_page(StatusCode::OK, "");
    }
    private(
        "text/html; charset=utf-8",
        PAGE.replace("{network}", &crate::console::escaped(&c.0.network)),
    )
}

async fn login(State(c): State<Console>, body: axum::body::Bytes) -> Response {
    if body.len() > LOGIN_BODY_MAX {
        return login_page(StatusCode::PAYLOAD_TOO_LARGE, "The login was too long.");
    }
    let token = form_value(&body, "token").unwrap_or_default();
    match c.login(&token) {
        Ok(id) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, "/".to_string()),
                (
                    header::SET_COOKIE,
                    format!(
                        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                        SESSION_TTL.as_secs()
                    ),
                ),
            ],
        )
            .into_response(),
        Err((status, message)) => login_page(status, message),
    }
}

async fn logout(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix(&format!("{COOKIE}=")))
        })
    {
        c.0.sessions.lock().expect("lock").remove(id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

async fn state(State(c): State<Console>, headers: HeaderMap) -> Response {
    if !c.session(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            private(
                "application/json",
                json!({"error": {"code": "UNAUTHENTICATED", "field": "cookie", "message": "log in with the console's token"}}).to_string(),
            ),
        )
            .into_response();
    }
    private("application/json", c.state().to_string())
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decoded(v))
    })
}

fn percent_decoded(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves the console on `listener` and polls the central bank through `dial` until the
/// process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    console: Console,
    dial: Dial,
    interval: Duration,
) -> std::io::Result<()> {
    tokio::spawn(console.clone().poll(dial, interval));
    axum::serve(listener, console.router()).await
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("console listen {addr}: {e}"))
}

const LOGIN: &str = include_str!("login.html");
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value(b"token=ab%2Fc+d&x=1", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(form_value(b"x=1", "token"), None);
        assert_eq!(form_value(b"token=%zz", "token").as_deref(), Some("%zz"));
        assert_eq!(form_value(b"token=%4", "token").as_deref(), Some("%4"));
    }

    #[test]
    fn a_wrong_token_is_refused_and_too_many_failures_wait() {
        let c = Console::new("n", "secret-token".into());
        assert!(c.login("secret-token").is_ok());
        for _ in 0..FAILURES_MAX {
            assert_eq!(c.login("guess").unwrap_err().0, StatusCode::UNAUTHORIZED);
        }
        // Even the right token waits once the failures are spent.
        assert_eq!(
            c.login("secret-token").unwrap_err().0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn a_session_cookie_opens_the_console_and_nothing_else_does() {
        let c = Console::new("n", "t".into());
        let id = c.login("t").unwrap();
        let with = |cookie: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, cookie.parse().unwrap());
            c.session(&h)
        };
        assert!(with(&format!("a=b; {COOKIE}={id}")));
        assert!(!with(&format!("{COOKIE}={}", "0".repeat(64))));
        assert!(!with("a=b"));
        assert!(!c.session(&HeaderMap::new()));
    }
}

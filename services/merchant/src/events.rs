//! Events and their webhooks. Every change a merchant must hear of (an order paid, a refund
//! done, a hold captured, a mandate charged, …) is an event, written in the same store
//! transaction as the change, with an id that is the same however often the change is
//! retried. The delivery worker POSTs each event to the merchant's webhook URL, signed with
//! the gateway's Ed25519 key, until the merchant answers 2xx: at least once, retried on the
//! runtime's one retry queue (backoff doubling from `webhook_retry_base_ms` to
//! `webhook_retry_max_ms`; given up after `webhook_attempts_max` attempts, about a day with
//! the defaults), every attempt in the delivery log, and redelivered by hand on request.
//!
//! A delivery is
//!
//! ```text
//! POST <webhook_url>
//! Content-Type: application/json
//! CBDC-Event-Id: evt_…
//! CBDC-Timestamp: <unix seconds>
//! CBDC-Signature: ed25519=<hex of the signature over "<timestamp>.<body>">
//!
//! {"id":"evt_…","type":"order.paid","merchant_id":"…","created_at_unix_ms":…,"data":{…}}
//! ```
//!
//! Keys: `e\0<id>` the event; `em\0<merchant>\0<created, 8 bytes BE><id>` a merchant's
//! events in order; `q\0<versionstamp, 10 bytes><id>` events to deliver (the queue, in the
//! order the store committed them); `ds\0<id>` its delivery state;
//! `dl\0<id>\0<attempt, 4 bytes BE>` the delivery log.

use std::collections::BTreeMap;
use std::time::Duration;

use cbdc_runtime::retry::{Failure, Item, RetryOptions, RetryQueue, Verdict};
use cbdc_store::TxError;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Credentials;
use crate::error::ApiError;
use crate::gateway::{Gateway, get_json, identifier, key, prefix_end, put_json};

/// Events read per pass of the delivery worker, at most.
const PAGE: usize = 256;
/// Deliveries in flight at once, at most.
const IN_FLIGHT: usize = 16;
/// How long a merchant's endpoint has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Events a merchant lists at once, at most.
pub const LIST_MAX: usize = 100;
/// Bytes of a merchant's answer kept in the delivery log.
const ANSWER_KEPT: usize = 200;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub merchant_id: String,
    pub created_at_unix_ms: u64,
    /// The order, refund, hold or mandate as it became.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Given up after the last attempt; redelivery starts it again.
    Failed,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DeliveryState {
    pub status: DeliveryStatus,
    pub attempts: u32,
}

/// One attempt.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub at_unix_ms: u64,
    /// The HTTP status answered (0 when none came).
    pub http_status: u16,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// An event as its merchant reads it: the event, its delivery state and log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventView {
    pub event: Event,
    pub delivery: DeliveryState,
    pub attempts: Vec<Attempt>,
}

/// The event id of `kind` for `reference` at a merchant: the same for the same change.
pub fn event_id(merchant: &str, kind: &str, reference: &str) -> String {
    let mut h = Sha256::new();
    for part in [merchant, kind, reference] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    format!("evt_{}", &hex::encode(h.finalize())[..32])
}

fn event_key(id: &str) -> Vec<u8> {
    key(&[b"e", id.as_bytes()])
}

fn state_key(id: &str) -> Vec<u8> {
    key(&[b"ds", id.as_bytes()])
}

/// The delivery state of an event that exists: pending and never attempted until its
/// first attempt is recorded.
async fn delivery_state(
    tx: &mut cbdc_store::Transaction,
    id: &str,
) -> Result<DeliveryState, TxError<ApiError>> {
    Ok(get_json(tx, &state_key(id))
        .await?
        .unwrap_or(DeliveryState {
            status: DeliveryStatus::Pending,
            attempts: 0,
        }))
}

/// Where the versionstamp starts in a queue key, and where the event id starts.
const STAMP_AT: usize = 2;
const ID_AT: usize = STAMP_AT + 10;

/// Queues `id`'s delivery, at the versionstamp of the transaction's commit: a row that
/// becomes visible later always lies after every row visible now, so a pass resumes exactly
/// after the last row it read.
fn queue(
    tx: &mut cbdc_store::Transaction,
    id: &str,
    merchant: &str,
) -> Result<(), TxError<ApiError>> {
    let mut k = b"q\0".to_vec();
    k.extend_from_slice(&cbdc_store::Versionstamp::PLACEHOLDER);
    k.extend_from_slice(id.as_bytes());
    tx.set_versionstamped_key(k, STAMP_AT as u32, merchant.as_bytes().to_vec())?;
    Ok(())
}

/// The event id of a queue row's key.
fn queued_id(key: &[u8]) -> String {
    String::from_utf8_lossy(key.get(ID_AT..).unwrap_or_default()).into_owned()
}

fn log_key(id: &str, attempt: u32) -> Vec<u8> {
    let mut k = key(&[b"dl", id.as_bytes()]);
    k.push(0);
    k.extend_from_slice(&attempt.to_be_bytes());
    k
}

/// Records an event and queues its delivery (inside the transaction of its change).
pub(crate) fn emit(
    tx: &mut cbdc_store::Transaction,
    merchant: &str,
    kind: &str,
    reference: &str,
    at_ms: u64,
    data: &impl Serialize,
) -> Result<(), TxError<ApiError>> {
    let id = event_id(merchant, kind, reference);
    let event = Event {
        id: id.clone(),
        kind: kind.to_string(),
        merchant_id: merchant.to_string(),
        created_at_unix_ms: at_ms,
        data: serde_json::to_value(data).expect("serialisable"),
    };
    put_json(tx, event_key(&id), &event)?;
    let mut listed = key(&[b"em", merchant.as_bytes()]);
    listed.push(0);
    listed.extend_from_slice(&at_ms.to_be_bytes());
    listed.extend_from_slice(id.as_bytes());
    tx.set(listed, b"")?;
    // No state row yet: an event without one is pending, never attempted (one row fewer
    // for every event, most of which are delivered at the first attempt).
    queue(tx, &id, merchant)
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn sign(key: &cbdc_core::Keypair, timestamp: u64, body: &[u8]) -> String {
    format!(
        "ed25519={}",
        hex::encode(key.sign(&signed_bytes(timestamp, body)))
    )
}

/// What a webhook's signature covers: `"<timestamp>.<body>"`.
pub fn signed_bytes(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{timestamp}.").into_bytes();
    m.extend_from_slice(body);
    m
}

/// Checks a delivery as a merchant would: the signature by the gateway's key over the
/// timestamp and body, and the timestamp within `window_s` of `now`. The key is checked
/// once, when the merchant first reads it (`PublicKey::checked_key`): checking it costs
/// about as much as the signature.
pub fn verify(
    gateway_key: &cbdc_core::keys::CheckedKey,
    timestamp: u64,
    signature_header: &str,
    body: &[u8],
    now: u64,
    window_s: u64,
) -> Result<(), String> {
    if now.abs_diff(timestamp) > window_s {
        return Err(format!("timestamp {timestamp} is outside the window"));
    }
    let sig: [u8; 64] = signature_header
        .strip_prefix("ed25519=")
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or("CBDC-Signature: expected ed25519=<128 hex digits>")?;
    if !cbdc_core::signature::verify(gateway_key, &signed_bytes(timestamp, body), &sig) {
        return Err("signature: does not verify".into());
    }
    Ok(())
}

/// The delivery worker's state.
pub(crate) struct Deliveries {
    queue: RetryQueue<String>,
    http: reqwest::Client,
    attempts_max: u32,
    /// The last queue row a pass read to the end of the queue: rows queued since lie after
    /// it, so a pass starts there rather than at the front, where delivered rows leave
    /// tombstones a range read would walk over.
    floor: Option<Vec<u8>>,
    /// Rows read and still queued (row key → merchant): their delivery failed and waits
    /// for its retry. They lie behind the floor, so they are offered again from here, every
    /// `recheck`, a page at a time.
    behind: BTreeMap<Vec<u8>, String>,
    recheck: Duration,
    last_recheck: std::time::Instant,
    /// The next pass reads from the front of the queue: at start, and after `behind`
    /// overflowed (what it could not hold is found there).
    from_front: bool,
}

/// Rows kept behind the floor, at most.
const BEHIND_MAX: usize = 65_536;
/// The longest time between two offers of the rows behind the floor.
const RECHECK_MAX: Duration = Duration::from_secs(10);
/// The shortest.
const RECHECK_MIN: Duration = Duration::from_millis(100);

impl Deliveries {
    pub fn new(base: Duration, max: Duration, attempts_max: u32) -> Deliveries {
        Deliveries {
            queue: RetryQueue::new(RetryOptions {
                base,
                max,
                chunk_items_max: PAGE,
                ..RetryOptions::default()
            }),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            attempts_max: attempts_max.max(1),
            floor: None,
            behind: BTreeMap::new(),
            // A retry is due no sooner than `base` after its failure.
            recheck: base.clamp(RECHECK_MIN, RECHECK_MAX),
            last_recheck: std::time::Instant::now(),
            from_front: true,
        }
    }

    /// Keeps a row read behind the floor until it is delivered or given up.
    fn keep(&mut self, row: &[u8], merchant: &str) {
        if self.behind.contains_key(row) {
            return;
        }
        if self.behind.len() >= BEHIND_MAX {
            self.from_front = true;
            return;
        }
        self.behind.insert(row.to_vec(), merchant.to_string());
    }
}

impl Gateway {
    /// One pass of the delivery worker: every due event of a page is read (one store read),
    /// POSTed (`IN_FLIGHT` at a time) and its attempt recorded (one store commit).
    pub(crate) async fn deliver_due(&self, d: &mut Deliveries) -> Result<usize, ApiError> {
        let resumed = d.queue.next_page();
        let begin = match (resumed, &d.floor) {
            (Some(k), _) => k,
            (None, Some(floor)) if !d.from_front => {
                let mut k = floor.clone();
                k.push(0);
                k
            }
            (None, _) => {
                d.from_front = false;
                b"q\0".to_vec()
            }
        };
        let end = prefix_end(b"q\0");
        let rows = self
            .scan(begin, end, cbdc_store::RangeOptions::snapshot(PAGE))
            .await?;
        let next = (rows.len() == PAGE).then(|| {
            let mut k = rows.last().expect("a full page").0.clone();
            k.push(0);
            k
        });
        // A pass that read to the end of the queue moves the floor to its last row (whether
        // it started at the front, the floor or a page before).
        if next.is_none()
            && let Some((last, _)) = rows.last()
        {
            d.floor = Some(last.clone());
        }
        let now = self.now_ms();
        let mut rows: BTreeMap<Vec<u8>, String> = rows
            .into_iter()
            .map(|(k, m)| (k, String::from_utf8_lossy(&m).into_owned()))
            .collect();
        if d.last_recheck.elapsed() >= d.recheck {
            d.last_recheck = std::time::Instant::now();
            let due = d
                .behind
                .iter()
                .filter(|(k, _)| !rows.contains_key(*k) && d.queue.due(&queued_id(k), now))
                .take(PAGE)
                .map(|(k, m)| (k.clone(), m.clone()))
                .collect::<Vec<_>>();
            rows.extend(due);
        }
        for (k, m) in &rows {
            d.keep(k, m);
        }
        let items = rows
            .into_iter()
            .map(|(k, merchant)| Item {
                key: queued_id(&k),
                group: 0,
                bytes: 1,
                value: (k, merchant),
            })
            .collect();
        let plan = d.queue.plan(items, next, now);
        let due: Vec<_> = plan.chunks.into_iter().flatten().collect();
        if due.is_empty() {
            return Ok(0);
        }
        // The events and their states, in one read.
        let ids: Vec<String> = due.iter().map(|i| i.key.clone()).collect();
        let records = self
            .tx(move |tx| {
                let ids = ids.clone();
                Box::pin(async move {
                    let mut out = Vec::with_capacity(ids.len());
                    for id in &ids {
                        let e: Option<Event> = get_json(tx, &event_key(id)).await?;
                        let s = delivery_state(tx, id).await?;
                        out.push(e.map(|e| (e, s)));
                    }
                    Ok(out)
                })
            })
            .await?;
        let attempts_max = d.attempts_max;
        let http = d.http.clone();
        let key = std::sync::Arc::new(self.custody.webhook());
        let jobs: Vec<_> = due.into_iter().zip(records).collect();
        let attempts: Vec<(String, Vec<u8>, Attempt)> = futures::stream::iter(jobs)
            .map(|(item, record)| {
                let (http, key) = (http.clone(), std::sync::Arc::clone(&key));
                async move {
                    let (queue_row, merchant_id) = item.value;
                    let attempt = match record {
                        Some((event, state)) => {
                            self.post(&http, &key, &merchant_id, &event, state.attempts + 1)
                                .await
                        }
                        None => Attempt {
                            attempt: 0,
                            at_unix_ms: self.now_ms(),
                            http_status: 0,
                            error: Some("a queued event without its record".into()),
                            duration_ms: 0,
                        },
                    };
                    (item.key, queue_row, attempt)
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        // Every attempt, in one commit.
        let recorded = attempts.clone();
        self.tx(move |tx| {
            let recorded = recorded.clone();
            Box::pin(async move {
                for (id, queue_row, attempt) in recorded {
                    if attempt.attempt == 0 {
                        tx.clear(queue_row)?;
                        continue;
                    }
                    put_json(tx, log_key(&id, attempt.attempt), &attempt)?;
                    let status = match (&attempt.error, attempt.attempt >= attempts_max) {
                        (None, _) => DeliveryStatus::Delivered,
                        (Some(_), true) => DeliveryStatus::Failed,
                        (Some(_), false) => DeliveryStatus::Pending,
                    };
                    put_json(
                        tx,
                        state_key(&id),
                        &DeliveryState {
                            status,
                            attempts: attempt.attempt,
                        },
                    )?;
                    if status != DeliveryStatus::Pending {
                        tx.clear(queue_row)?;
                    }
                }
                Ok(())
            })
        })
        .await?;
        let mut delivered = 0;
        for (id, row, attempt) in attempts {
            let outcome = match &attempt.error {
                None => "delivered",
                Some(_) if attempt.attempt >= attempts_max || attempt.attempt == 0 => "given_up",
                Some(_) => "retry",
            };
            self.metrics.webhooks.with_label_values(&[outcome]).inc();
            match attempt.error {
                None => {
                    d.queue.succeeded(&id);
                    d.behind.remove(&row);
                    delivered += 1;
                }
                Some(why) if attempt.attempt >= attempts_max || attempt.attempt == 0 => {
                    d.queue.succeeded(&id);
                    d.behind.remove(&row);
                    tracing::warn!(event = %id, %why, "webhook given up");
                }
                Some(why) => {
                    if let Verdict::Retry { failures, wait } =
                        d.queue
                            .failed(id.clone(), Failure::Retryable(why.clone()), now)
                    {
                        tracing::debug!(event = %id, failures, ?wait, %why, "webhook retried later");
                    }
                }
            }
        }
        Ok(delivered)
    }

    /// POSTs one event to its merchant's endpoint, signed; the attempt as it went.
    async fn post(
        &self,
        http: &reqwest::Client,
        key: &cbdc_core::Keypair,
        merchant_id: &str,
        event: &Event,
        attempt: u32,
    ) -> Attempt {
        let started = std::time::Instant::now();
        let url = match self.merchant(merchant_id).await {
            Ok(Some(m)) => m.webhook_url,
            Ok(None) => String::new(),
            Err(e) => {
                return Attempt {
                    attempt,
                    at_unix_ms: self.now_ms(),
                    http_status: 0,
                    error: Some(e.message),
                    duration_ms: 0,
                };
            }
        };
        let body = serde_json::to_vec(event).expect("serialisable");
        let timestamp = self.now();
        let answer = http
            .post(&url)
            .header("content-type", "application/json")
            .header("cbdc-event-id", &event.id)
            .header("cbdc-timestamp", timestamp.to_string())
            .header("cbdc-signature", sign(key, timestamp, &body))
            .body(body)
            .send()
            .await;
        let (http_status, error) = match answer {
            Ok(r) if r.status().is_success() => (r.status().as_u16(), None),
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let kept: String = text.chars().take(ANSWER_KEPT).collect();
                (status, Some(format!("answered {status}: {kept}")))
            }
            Err(e) => (0, Some(e.to_string())),
        };
        Attempt {
            attempt,
            at_unix_ms: self.now_ms(),
            http_status,
            error,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// An event of the signing merchant with its delivery state and log.
    pub async fn event(&self, credentials: &Credentials, id: &str) -> Result<EventView, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("event_id", id, 36, 36)?;
        self.event_view(&m, id).await
    }

    pub(crate) async fn event_view(&self, merchant: &str, id: &str) -> Result<EventView, ApiError> {
        let (m, id) = (merchant.to_string(), id.to_string());
        self.tx(move |tx| {
            let (m, id) = (m.clone(), id.clone());
            Box::pin(async move {
                let event: Event = get_json(tx, &event_key(&id))
                    .await?
                    .filter(|e: &Event| e.merchant_id == m)
                    .ok_or_else(|| {
                        TxError::Abort(ApiError::not_found("event_id", "no such event"))
                    })?;
                let delivery = delivery_state(tx, &id).await?;
                let begin = log_key(&id, 0);
                let end = log_key(&id, u32::MAX);
                let rows = tx
                    .get_range(&begin, &end, cbdc_store::RangeOptions::snapshot(1000))
                    .await?;
                let attempts = rows
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice(v).ok())
                    .collect();
                Ok(EventView {
                    event,
                    delivery,
                    attempts,
                })
            })
        })
        .await
    }

    /// The signing merchant's latest events (at most `limit`, newest first).
    pub async fn events(
        &self,
        credentials: &Credentials,
        limit: usize,
    ) -> Result<Vec<EventView>, ApiError> {
        let m = self.merchant_signer(credentials)?;
        if limit == 0 || limit > LIST_MAX {
            return Err(ApiError::invalid("limit", format!("1 to {LIST_MAX}")));
        }
        let mut begin = key(&[b"em", m.as_bytes()]);
        begin.push(0);
        let end = prefix_end(&begin);
        let options = cbdc_store::RangeOptions {
            limit,
            reverse: true,
            snapshot: true,
        };
        let rows = self.scan(begin, end, options).await?;
        let prefix = key(&[b"em", m.as_bytes()]).len() + 1 + 8;
        let mut out = Vec::with_capacity(rows.len());
        for (k, _) in rows {
            let id = String::from_utf8_lossy(&k[prefix..]).into_owned();
            out.push(self.event_view(&m, &id).await?);
        }
        Ok(out)
    }

    /// Queues an event's delivery again (after it was given up, or to hear it once more).
    pub async fn redeliver(
        &self,
        credentials: &Credentials,
        id: &str,
    ) -> Result<EventView, ApiError> {
        let m = self.merchant_signer(credentials)?;
        identifier("event_id", id, 36, 36)?;
        let (mm, idd) = (m.clone(), id.to_string());
        // Queued at this commit's versionstamp: after the delivery worker's floor.
        self.once(credentials, move |tx| {
            let (m, id) = (mm.clone(), idd.clone());
            Box::pin(async move {
                let _event: Event = get_json(tx, &event_key(&id))
                    .await?
                    .filter(|e: &Event| e.merchant_id == m)
                    .ok_or_else(|| {
                        TxError::Abort(ApiError::not_found("event_id", "no such event"))
                    })?;
                let mut state = delivery_state(tx, &id).await?;
                state.status = DeliveryStatus::Pending;
                put_json(tx, state_key(&id), &state)?;
                queue(tx, &id, &m)
            })
        })
        .await?;
        self.wake_webhooks.notify_one();
        self.event_view(&m, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event is pending and unattempted until its first attempt is recorded, with no
    /// state row written when it is emitted; a recorded state then reads back as written.
    #[tokio::test]
    async fn an_emitted_event_is_pending_until_an_attempt_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let db =
            cbdc_store::Database::open_embedded(dir.path(), Default::default()).expect("opens");
        let id = event_id("m1", "order.paid", "o1");
        let read = |db: cbdc_store::Database, id: String| async move {
            let r: Result<_, TxError<ApiError>> = db
                .run(|tx| {
                    let id = id.clone();
                    Box::pin(async move {
                        let state = delivery_state(tx, &id).await?;
                        let row = tx.get(&state_key(&id)).await?;
                        Ok((state, row.is_some()))
                    })
                })
                .await;
            r.expect("reads")
        };
        let emitted: Result<(), TxError<ApiError>> = db
            .run(|tx| Box::pin(async move { emit(tx, "m1", "order.paid", "o1", 1_000, &"data") }))
            .await;
        emitted.expect("emits");
        let pending = DeliveryState {
            status: DeliveryStatus::Pending,
            attempts: 0,
        };
        assert_eq!(read(db.clone(), id.clone()).await, (pending, false));
        let delivered = DeliveryState {
            status: DeliveryStatus::Delivered,
            attempts: 2,
        };
        let d = delivered.clone();
        let k = state_key(&id);
        let recorded: Result<(), TxError<ApiError>> = db
            .run(|tx| {
                let (k, d) = (k.clone(), d.clone());
                Box::pin(async move { put_json(tx, k, &d) })
            })
            .await;
        recorded.expect("records");
        assert_eq!(read(db, id).await, (delivered, true));
    }
}

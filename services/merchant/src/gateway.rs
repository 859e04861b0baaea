//! The gateway's rules and state: merchants onboarded by their bank, orders, and the nonces
//! of signed requests — all in `cbdc-store`, each request's effect and its nonce in one
//! transaction.
//!
//! Keys: `m\0<merchant_id>` a merchant; `o\0<merchant_id>\0<out_trade_no>` an order;
//! `n\0<timestamp, 8 bytes big-endian><signer>\0<nonce>` a used nonce, cleared once its
//! timestamp is outside the replay window (a replay must carry the same timestamp: the
//! signature covers it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cbdc_core::keys::CheckedKey;
use cbdc_core::{Address, LedgerId, PublicKey};
use cbdc_proto::keycache::KeyCache;
use cbdc_runtime::clock::Clock;
use cbdc_store::{Database, TxError};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Credentials, Signer};
use crate::custody::Custody;
use crate::error::ApiError;
use crate::ledgers::Ledgers;
// Orders live in their own module; their types are named here too, where they always were.
pub use crate::orders::{
    CreateOrder, DESCRIPTION_MAX, EXPIRY_DEFAULT_S, EXPIRY_MAX_S, EXPIRY_MIN_S, Order, OrderStatus,
};
pub(crate) use crate::orders::{order_key, read_order};

/// Longest webhook URL.
pub const URL_MAX: usize = 512;

/// A merchant, as its bank onboarded it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Merchant {
    pub merchant_id: String,
    pub bank: u32,
    pub settlement_address: String,
    pub api_public_key: String,
    pub webhook_url: String,
    /// The wallet the gateway keeps for the merchant at its bank: payments arrive here,
    /// refunds leave from here. Its key is derived from the gateway's seed.
    pub collection_address: String,
}

/// What a bank sends to onboard a merchant.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnboardRequest {
    pub merchant_id: String,
    pub settlement_address: String,
    pub api_public_key: String,
    pub webhook_url: String,
    /// The merchant's contact number (E.164): its collection wallet is opened with it.
    pub contact_phone: String,
}

pub(crate) fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// The key after every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    end
}

fn merchant_key(id: &str) -> Vec<u8> {
    key(&[b"m", id.as_bytes()])
}

fn nonce_key(c: &Credentials) -> Vec<u8> {
    let signer = match &c.signer {
        Signer::Merchant(m) => format!("m:{m}"),
        Signer::Bank(b) => format!("b:{b}"),
    };
    let mut k = b"n\0".to_vec();
    k.extend_from_slice(&c.timestamp.to_be_bytes());
    k.extend_from_slice(signer.as_bytes());
    k.push(0);
    k.extend_from_slice(c.nonce.as_bytes());
    k
}

/// An identifier: 1 to `max` letters, digits, `-` or `_` (and at least `min`).
pub(crate) fn identifier(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    if value.len() < min
        || value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid(
            field,
            format!("{min} to {max} letters, digits, '-' or '_'"),
        ));
    }
    Ok(())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde names an unknown or missing field in its message; say which one.
        let text = e.to_string();
        let field = text
            .split('`')
            .nth(1)
            .filter(|_| text.contains("field"))
            .unwrap_or("body");
        ApiError::invalid(field, format!("not the expected JSON: {text}"))
    })
}

/// The gateway: its store, its network's name, the banks that may onboard merchants, the
/// keys it holds and the ledgers it pays through.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) db: Database,
    pub(crate) network: Arc<str>,
    banks: Arc<BTreeMap<u32, PublicKey>>,
    pub(crate) custody: Custody,
    pub(crate) ledgers: Ledgers,
    pub(crate) clock: Clock,
    /// One outgoing transfer at a time per collection wallet (each spends its coins).
    pub(crate) senders: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Wake the refund and the webhook worker (a wake-up while one is busy is kept for its
    /// next wait).
    pub(crate) wake_refunds: Arc<tokio::sync::Notify>,
    pub(crate) wake_webhooks: Arc<tokio::sync::Notify>,
    merchants: Arc<std::sync::RwLock<HashMap<String, Merchant>>>,
    /// Signers' keys checked before (a check costs about a signature verification).
    pub(crate) keys: Arc<KeyCache>,
    /// What the gateway counts (served on `/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Merchant records kept in memory, at most.
const MERCHANTS_CACHED: usize = 100_000;

impl Gateway {
    pub fn new(
        db: Database,
        network: String,
        banks: BTreeMap<u32, PublicKey>,
        custody: Custody,
        ledgers: Ledgers,
    ) -> Gateway {
        Gateway {
            db,
            network: network.into(),
            banks: Arc::new(banks),
            custody,
            ledgers,
            clock: Clock::system(),
            senders: Arc::default(),
            wake_refunds: Arc::default(),
            wake_webhooks: Arc::default(),
            merchants: Arc::default(),
            keys: Arc::default(),
            metrics: crate::metrics::Metrics::new(),
        }
    }

    /// The gateway reading time from `clock` (tests move it).
    pub fn with_clock(mut self, clock: Clock) -> Gateway {
        self.clock = clock;
        self
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        self.clock.now_ms() / 1000
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The public key that signs webhooks.
    pub fn webhook_key(&self) -> PublicKey {
        self.custody.webhook().public()
    }

    /// The rows from `begin` (inclusive) to `end` (exclusive), as `options` say.
    pub(crate) async fn scan(
        &self,
        begin: Vec<u8>,
        end: Vec<u8>,
        options: cbdc_store::RangeOptions,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
        self.tx(move |tx| {
            let (begin, end) = (begin.clone(), end.clone());
            Box::pin(async move { Ok(tx.get_range(&begin, &end, options).await?) })
        })
        .await
    }

    /// Runs `f` as one store transaction (retried on conflict).
    pub(crate) async fn tx<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: for<'t> Fn(
                &'t mut cbdc_store::Transaction,
            ) -> cbdc_store::BoxFuture<'t, Result<T, TxError<ApiError>>>
            + Send
            + Sync
            + 'static,
    {
        let f = Arc::new(f);
        Ok(self
            .db
            .run(|tx| {
                let f = Arc::clone(&f);
                Box::pin(async move { f(tx).await })
            })
            .await?)
    }

    /// The signer's key: a bank's authority key from the configuration, or an onboarded
    /// merchant's API key.
    async fn signer_key(&self, signer: &Signer) -> Result<CheckedKey, ApiError> {
        let key = match signer {
            Signer::Bank(b) => self.banks.get(b).copied().ok_or_else(|| {
                ApiError::unauthenticated("authorization", format!("bank {b}: not known here"))
            })?,
            Signer::Merchant(m) => {
                let merchant = self.merchant(m).await?.ok_or_else(|| {
                    ApiError::unauthenticated(
                        "authorization",
                        format!("merchant_id {m}: not onboarded"),
                    )
                })?;
                // Checked when the merchant was onboarded, and again below (once).
                let bytes: [u8; 32] = hex::decode(&merchant.api_public_key)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| ApiError::internal("api_public_key: stored unreadable"))?;
                PublicKey::from_bytes(bytes)
            }
        };
        self.keys
            .checked_key(&key)
            .map_err(|_| ApiError::unauthenticated("signature", "the signer's key is not usable"))
    }

    /// The lock that lets one outgoing transfer at a time spend a collection wallet.
    pub(crate) fn sender(&self, merchant_id: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut senders = self.senders.lock().expect("not poisoned");
        std::sync::Arc::clone(senders.entry(merchant_id.to_string()).or_default())
    }

    /// Checks a request's signature (but not yet its nonce).
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let key = self.signer_key(&credentials.signer).await?;
        auth::verify(credentials, &key, method, path, body, self.now())
    }

    /// An onboarded merchant. A merchant record never changes once written (onboarding it
    /// again with other details is refused), so the ones read are kept in memory (bounded).
    pub async fn merchant(&self, id: &str) -> Result<Option<Merchant>, ApiError> {
        if let Some(m) = self.merchants.read().expect("not poisoned").get(id) {
            return Ok(Some(m.clone()));
        }
        let found = self.read_merchant(id).await?;
        if let Some(m) = &found {
            let mut cache = self.merchants.write().expect("not poisoned");
            if cache.len() >= MERCHANTS_CACHED {
                cache.clear();
            }
            cache.insert(id.to_string(), m.clone());
        }
        Ok(found)
    }

    async fn read_merchant(&self, id: &str) -> Result<Option<Merchant>, ApiError> {
        let k = merchant_key(id);
        let found: Result<Option<Vec<u8>>, TxError<ApiError>> = self
            .db
            .run(|tx| {
                let k = k.clone();
                Box::pin(async move { Ok(tx.get(&k).await?) })
            })
            .await;
        found?
            .map(|v| serde_json::from_slice(&v).map_err(|e| ApiError::internal(e.to_string())))
            .transpose()
    }

    /// Runs `effect` in one transaction with the check and record of the request's nonce.
    pub(crate) async fn once<T, F>(
        &self,
        credentials: &Credentials,
        effect: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: for<'t> Fn(
                &'t mut cbdc_store::Transaction,
            ) -> cbdc_store::BoxFuture<'t, Result<T, TxError<ApiError>>>
            + Send
            + Sync
            + 'static,
    {
        let nonce = nonce_key(credentials);
        let effect = std::sync::Arc::new(effect);
        Ok(self
            .db
            .run(|tx| {
                let nonce = nonce.clone();
                let effect = std::sync::Arc::clone(&effect);
                Box::pin(async move {
                    if tx.get(&nonce).await?.is_some() {
                        return Err(TxError::Abort(ApiError::unauthenticated(
                            "authorization",
                            "nonce: already used (a replayed request)",
                        )));
                    }
                    tx.set(nonce, b"")?;
                    effect(tx).await
                })
            })
            .await?)
    }

    /// Forgets nonces whose timestamps are outside the replay window (they can no longer be
    /// replayed: the timestamp check refuses them first).
    pub async fn prune_nonces(&self) -> Result<(), ApiError> {
        let cutoff = self.now().saturating_sub(auth::REPLAY_WINDOW_S + 1);
        let (begin, mut end) = (b"n\0".to_vec(), b"n\0".to_vec());
        end.extend_from_slice(&cutoff.to_be_bytes());
        let done: Result<(), TxError<ApiError>> = self
            .db
            .run(|tx| {
                let (begin, end) = (begin.clone(), end.clone());
                Box::pin(async move { Ok(tx.clear_range(&begin, &end)?) })
            })
            .await;
        Ok(done?)
    }

    /// A bank onboards a merchant: the settlement wallet must be on the bank's own ledger.
    /// The merchant id is the idempotency key: the same content answers the same merchant,
    /// other content is refused.
    pub async fn onboard(
        &self,
        credentials: &Credentials,
        body: &[u8],
    ) -> Result<Merchant, ApiError> {
        let Signer::Bank(bank) = credentials.signer else {
            return Err(ApiError::denied(
                "authorization",
                "only a bank's authority onboards merchants",
            ));
        };
        let r: OnboardRequest = decode(body)?;
        identifier("merchant_id", &r.merchant_id, 1, 32)?;
        let address: Address = r
            .settlement_address
            .parse()
            .map_err(|e| ApiError::invalid("settlement_address", format!("{e}")))?;
        if address.ledger != LedgerId(bank) {
            return Err(ApiError::invalid(
                "settlement_address",
                format!(
                    "on ledger {}; bank {bank} onboards merchants with wallets on its own ledger",
                    address.ledger.0
                ),
            ));
        }
        crate::parse_key("api_public_key", &r.api_public_key)?;
        let url = r.webhook_url.trim();
        if url.len() > URL_MAX || !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ApiError::invalid(
                "webhook_url",
                format!("an http(s) URL of at most {URL_MAX} bytes"),
            ));
        }
        let phone = r.contact_phone.trim();
        if !(phone.len() >= 8
            && phone.len() <= 16
            && phone.starts_with('+')
            && phone[1..].bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ApiError::invalid(
                "contact_phone",
                "an E.164 number: '+' and 7 to 15 digits",
            ));
        }
        if !self.ledgers.knows(bank) {
            return Err(ApiError::invalid(
                "authorization",
                format!("bank {bank}: this gateway is not connected to its ledger"),
            ));
        }
        let collection = self.custody.collection(&r.merchant_id);
        let merchant = Merchant {
            merchant_id: r.merchant_id.clone(),
            bank,
            settlement_address: address.to_string(),
            api_public_key: r.api_public_key.trim().to_lowercase(),
            webhook_url: url.to_string(),
            collection_address: Address::new(LedgerId(bank), collection.public()).to_string(),
        };
        // The collection wallet is opened first (opening it again is harmless), so no
        // merchant is ever stored without its wallet.
        if self.merchant(&merchant.merchant_id).await?.as_ref() != Some(&merchant) {
            let mut ledger = self.ledgers.get("authorization", bank).await?;
            match ledger.open_wallet(&collection, phone).await {
                Ok(_) => {}
                Err(cbdc_client::Error::Rpc(e)) if e.code == tonic::Code::AlreadyExists => {}
                Err(e) => return Err(crate::payments::ledger_error("contact_phone", e)),
            }
        }
        let k = merchant_key(&merchant.merchant_id);
        let value = serde_json::to_vec(&merchant).expect("serialisable");
        let m = merchant.clone();
        self.once(credentials, move |tx| {
            let (k, value, m) = (k.clone(), value.clone(), m.clone());
            Box::pin(async move {
                if let Some(old) = tx.get(&k).await? {
                    return if old == value {
                        Ok(m)
                    } else {
                        Err(TxError::Abort(ApiError::conflict(
                            "merchant_id",
                            format!("{} is onboarded with other details", m.merchant_id),
                        )))
                    };
                }
                tx.set(k, value)?;
                Ok(m)
            })
        })
        .await
    }

    pub(crate) fn merchant_signer(&self, credentials: &Credentials) -> Result<String, ApiError> {
        match &credentials.signer {
            Signer::Merchant(m) => Ok(m.clone()),
            Signer::Bank(_) => Err(ApiError::denied(
                "authorization",
                "orders are the merchant's: sign with its API key",
            )),
        }
    }

    /// The signing merchant's own record (its collection address among it).
    pub async fn me(&self, credentials: &Credentials) -> Result<Merchant, ApiError> {
        let m = self.merchant_signer(credentials)?;
        self.once(credentials, |_| Box::pin(async { Ok(()) }))
            .await?;
        self.merchant(&m)
            .await?
            .ok_or_else(|| ApiError::not_found("merchant_id", "not onboarded"))
    }
}

/// Reads a JSON record.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    tx: &mut cbdc_store::Transaction,
    k: &[u8],
) -> Result<Option<T>, TxError<ApiError>> {
    tx.get(k)
        .await?
        .map(|v| {
            serde_json::from_slice(&v)
                .map_err(|e| TxError::Abort(ApiError::internal(format!("a stored record: {e}"))))
        })
        .transpose()
}

/// Writes a JSON record.
pub(crate) fn put_json<T: Serialize>(
    tx: &mut cbdc_store::Transaction,
    k: Vec<u8>,
    v: &T,
) -> Result<(), TxError<ApiError>> {
    Ok(tx.set(k, serde_json::to_vec(v).expect("serialisable"))?)
}

//! A client of the gateway's HTTP/JSON API: requests signed as a merchant or a bank signs
//! them, errors as the gateway names them. The CLI, the demo and the load generator use it.

use std::sync::Arc;

use cbdc_core::Keypair;
use serde_json::Value;

use crate::auth::{self, Signer};

/// A refusal or failure, as the gateway said it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    /// The HTTP status (0 when no answer came).
    pub status: u16,
    pub code: String,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} {}: {}", self.status, self.code, self.message)
        } else {
            write!(
                f,
                "{} {} ({}): {}",
                self.status, self.code, self.field, self.message
            )
        }
    }
}

/// The gateway at `base` (`http://host:port`), calling as `signer` with `key` (or unsigned).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    signer: Option<(Arc<Keypair>, Signer)>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Client {
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            signer: None,
        }
    }

    /// This client signing as `signer` with `key`.
    pub fn signed(&self, key: Arc<Keypair>, signer: Signer) -> Client {
        Client {
            signer: Some((key, signer)),
            ..self.clone()
        }
    }

    /// `method path` with a JSON `body` (`Value::Null` for none); the answer's JSON.
    pub async fn call(&self, method: &str, path: &str, body: &Value) -> Result<Value, CallError> {
        let (status, bytes) = self.raw(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| CallError {
            status,
            code: "NOT_JSON".into(),
            field: String::new(),
            message: e.to_string(),
        })
    }

    /// `method path` with a JSON `body`; the answer's bytes (a QR code, a CSV statement).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some((key, signer)) = &self.signer {
            let nonce = format!(
                "{:016x}{:016x}",
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            r = r.header(
                "authorization",
                auth::authorization(key, signer, method, path, now(), &nonce, &bytes),
            );
        }
        if !bytes.is_empty() {
            r = r.header("content-type", "application/json");
        }
        let answer = r.body(bytes).send().await.map_err(|e| CallError {
            status: 0,
            code: "UNAVAILABLE".into(),
            field: String::new(),
            message: format!("the gateway: {e}"),
        })?;
        let status = answer.status().as_u16();
        let bytes = answer.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        if !(200..300).contains(&status) {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let e = &v["error"];
            return Err(CallError {
                status,
                code: e["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                field: e["field"].as_str().unwrap_or("").to_string(),
                message: e["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_string,
                ),
            });
        }
        Ok((status, bytes))
    }
}

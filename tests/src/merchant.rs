//! A merchant gateway under test, in front of a [`Network`]: served on 127.0.0.1 with its
//! own store, calling the ledgers over mutual TLS with a certificate from the network's CA,
//! and the signed HTTP calls merchants and banks make.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cbdc_core::{Address, Keypair, LedgerId};
use cbdc_merchant::auth::{self, Signer};
use serde_json::{Value, json};

use crate::network::Network;

/// The gateway's certificate name.
pub const GATEWAY_NAME: &str = "merchant-gateway";

pub fn now() -> u64 {
    crate::wall_ms() / 1000
}

/// A nonce never used before in this process.
pub fn nonce() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("n{}-{}", now(), N.fetch_add(1, Ordering::Relaxed))
}

/// A request as sent: method, path, body, and the headers to use.
pub struct Call<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: Vec<u8>,
    pub authorization: Option<String>,
    pub content_type: Option<&'a str>,
}

pub struct MerchantNet {
    pub net: Network,
    pub base: String,
    /// The gRPC face's endpoint.
    pub grpc: String,
    /// The gateway's `/metrics` URL.
    pub metrics: String,
    /// Bank 1's authority key (every test bank's).
    pub bank: Keypair,
    /// Merchant `m-1`'s API key.
    pub merchant: Keypair,
    pub http: reqwest::Client,
    pub shutdown: cbdc_runtime::shutdown::Shutdown,
    pub gateway: cbdc_merchant::gateway::Gateway,
    /// Added to wall time to make the gateway's clock (tests move it ahead).
    pub clock_offset_ms: Arc<AtomicU64>,
    pub dir: tempfile::TempDir,
}

impl MerchantNet {
    /// A network of `banks` banks and a gateway serving them all.
    pub async fn start(banks: u32) -> MerchantNet {
        MerchantNet::start_with(Network::start(banks).await, |_| {}).await
    }

    /// A gateway in front of `net`, its configuration adjusted by `adjust`.
    pub async fn start_with(
        net: Network,
        adjust: impl FnOnce(&mut cbdc_merchant::config::MerchantConfig),
    ) -> MerchantNet {
        let dir = tempfile::tempdir().expect("tempdir");
        let tls = dir.path().join("tls");
        let issued = net.ca.issue(GATEWAY_NAME).expect("certificate");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.crt"), net.ca.cert_pem()).unwrap();
        std::fs::write(tls.join(format!("{GATEWAY_NAME}.crt")), issued.cert_pem).unwrap();
        cbdc_runtime::secret::write_private(
            &tls.join(format!("{GATEWAY_NAME}.key")),
            issued.key_pem.as_bytes(),
        )
        .unwrap();
        let bank = Keypair::from_seed(&crate::AUTHORITY_SEED);
        let mut config = cbdc_merchant::config::MerchantConfig::local(dir.path(), crate::NETWORK);
        config.tls = cbdc_runtime::tls::TlsConfig::in_dir(&tls, GATEWAY_NAME);
        for b in &net.banks {
            let id = b.ledger_id().0.to_string();
            config
                .banks
                .insert(id.clone(), hex::encode(bank.public().as_bytes()));
            config
                .ledgers
                .insert(id, format!("https://{}", b.running().grpc_addr));
        }
        adjust(&mut config);
        let offset = Arc::new(AtomicU64::new(0));
        let clock = {
            let offset = Arc::clone(&offset);
            cbdc_runtime::clock::Clock::from_fn(move || {
                crate::wall_ms() + offset.load(Ordering::SeqCst)
            })
        };
        let gateway = cbdc_merchant::gateway_of(&config)
            .expect("gateway")
            .with_clock(clock);
        let shutdown = cbdc_runtime::shutdown::Shutdown::new();
        let running = cbdc_merchant::serve(
            (config.listen, config.grpc_listen, config.metrics_listen),
            gateway.clone(),
            cbdc_merchant::pace(&config),
            shutdown.clone(),
        )
        .await
        .expect("serves");
        MerchantNet {
            net,
            base: format!("http://{}", running.http_addr),
            grpc: format!("http://{}", running.grpc_addr),
            metrics: format!("http://{}/metrics", running.metrics_addr),
            bank,
            merchant: Keypair::from_seed(&[2; 32]),
            http: reqwest::Client::new(),
            shutdown,
            gateway,
            clock_offset_ms: offset,
            dir,
        }
    }

    /// Moves the gateway's clock `s` seconds ahead.
    pub fn advance(&self, s: u64) {
        self.clock_offset_ms.fetch_add(s * 1000, Ordering::SeqCst);
    }

    /// A call signed by `key` as `signer` now, with a fresh nonce.
    pub fn signed<'a>(
        &self,
        key: &Keypair,
        signer: Signer,
        method: &'a str,
        path: &'a str,
        body: &Value,
    ) -> Call<'a> {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        Call {
            method,
            path,
            authorization: Some(auth::authorization(
                key,
                &signer,
                method,
                path,
                self.gateway.now(),
                &nonce(),
                &body,
            )),
            body,
            content_type: Some("application/json"),
        }
    }

    pub fn as_merchant<'a>(&self, method: &'a str, path: &'a str, body: &Value) -> Call<'a> {
        self.signed(
            &self.merchant,
            Signer::Merchant("m-1".into()),
            method,
            path,
            body,
        )
    }

    pub fn as_bank<'a>(&self, method: &'a str, path: &'a str, body: &Value) -> Call<'a> {
        self.signed(&self.bank, Signer::Bank(1), method, path, body)
    }

    /// An unsigned call (the payer-facing endpoints).
    pub fn public<'a>(&self, path: &'a str, body: &Value) -> Call<'a> {
        Call {
            method: "POST",
            path,
            body: body.to_string().into_bytes(),
            authorization: None,
            content_type: Some("application/json"),
        }
    }

    pub async fn send(&self, call: &Call<'_>) -> (u16, Vec<u8>) {
        let url = format!("{}{}", self.base, call.path);
        let mut r = match call.method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            _ => self.http.post(url),
        };
        if let Some(a) = &call.authorization {
            r = r.header("authorization", a);
        }
        if let Some(c) = call.content_type {
            r = r.header("content-type", c);
        }
        let resp = r.body(call.body.clone()).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    pub async fn json(&self, call: &Call<'_>) -> (u16, Value) {
        let (status, body) = self.send(call).await;
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&body)));
        (status, v)
    }

    /// A call that must answer 200; its JSON.
    pub async fn ok(&self, call: &Call<'_>) -> Value {
        let (status, v) = self.json(call).await;
        assert_eq!(status, 200, "{} {}: {v}", call.method, call.path);
        v
    }

    pub fn settlement(&self) -> String {
        Address::new(LedgerId(1), Keypair::from_seed(&[3; 32]).public()).to_string()
    }

    pub fn onboarding(&self) -> Value {
        json!({
            "merchant_id": "m-1",
            "settlement_address": self.settlement(),
            "api_public_key": hex::encode(self.merchant.public().as_bytes()),
            "webhook_url": "https://shop.example/hooks",
            "contact_phone": "+8613800000001",
        })
    }

    /// Onboards `m-1` with `webhook_url`; returns the merchant.
    pub async fn onboard_with(&self, webhook_url: &str) -> Value {
        let mut o = self.onboarding();
        o["webhook_url"] = webhook_url.into();
        self.ok(&self.as_bank("POST", "/v1/merchants", &o)).await
    }

    pub async fn onboard(&self) -> Value {
        self.ok(&self.as_bank("POST", "/v1/merchants", &self.onboarding()))
            .await
    }

    /// Waits (up to 20 s) until `check` holds of the value `read` returns.
    pub async fn eventually<F, Fut>(
        &self,
        what: &str,
        mut read: F,
        check: impl Fn(&Value) -> bool,
    ) -> Value
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Value>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let v = read().await;
            if check(&v) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: still {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of the samples of metric `name` whose labels contain every one of `labels`
    /// (as `key="value"`), from the gateway's `/metrics`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let text = self
            .http
            .get(&self.metrics)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.iter().all(|want| rest.contains(want)))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        self.net.stop().await;
    }
}

//! The Rust client of the CBDC network.
//!
//! - [`Dial`] says how to reach a service (URL, its certificate's name, the network's CA, a
//!   client certificate where the call needs one); [`connect`] makes the channel, with
//!   `TCP_NODELAY` on so a small request never waits for a delayed ACK.
//! - [`Ledger`] is a bank ledger as a wallet uses it: open a wallet, read with signed read
//!   grants, list coins, build transfers (on the server, or here from the listed coins),
//!   sign and submit them, watch, fetch and verify receipts.
//! - [`trust::Trusted`] keeps the last checkpoint a wallet saw of a ledger and checks, with a
//!   consistency proof, that every later one extends it: the log the wallet was shown only
//!   grew.
//! - [`Error`] is what a call can fail with; a refusal is an [`RpcError`] with the
//!   service's stable reason, its facts and the field at fault, read from the gRPC rich error
//!   model (never from the message text).
//!
//! ```no_run
//! # async fn run() -> Result<(), cbdc_client::Error> {
//! use cbdc_client::{Dial, Ledger};
//! use cbdc_core::{Address, Amount, Keypair, LedgerId};
//!
//! let dial = Dial::new("https://127.0.0.1:50061", "bank-1")
//!     .with_ca_pem(std::fs::read("devnet/tls/ca.crt").unwrap());
//! let mut bank = Ledger::connect(&dial, LedgerId(1), "devnet-3f2a").await?;
//! let alice = Keypair::from_seed(&[7; 32]);
//! let bob: Address = "ecny1…".parse().unwrap();
//! let paid = bank.pay(&alice, &[(bob, Amount::parse("12.50").unwrap())], b"").await?;
//! println!("txid {} at {:?}", paid.txid, paid.committed.log_position);
//! # Ok(()) }
//! ```
//!
//! `examples/wallet.rs` runs the whole path against a ledger it starts itself:
//! `cargo run -p cbdc-client --example wallet`.

mod dial;
mod error;
mod ledger;
pub mod trust;

pub use cbdc_proto::v1;
pub use dial::{Dial, connect};
pub use error::{Error, RpcError, transient};
pub use ledger::{Coin, Ledger, Paid, select_coins};

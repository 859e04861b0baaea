//! `cbdc`: the one binary. Serve any service, run a devnet, the narrated demo, and the wallet
//! and admin commands. The commands live here (the binary only parses arguments), so the
//! tests run them in process.

pub mod chaos;
pub mod cli;
pub mod client;
pub mod console;
pub mod demo;
pub mod devnet;
pub mod overload;

//! Structured logs through `tracing`. `RUST_LOG` filters (default `info`); `json` selects one
//! JSON object per line for log shippers.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (several servers in one test) do nothing.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a pipe gets plain text.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

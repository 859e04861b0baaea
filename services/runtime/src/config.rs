//! Configuration: a TOML file, then environment variables, deserialised into a service's
//! config type. The type should use `#[serde(deny_unknown_fields)]`, so a misspelt key in
//! the file or the environment is an error naming it rather than a silently ignored setting.
//!
//! Environment variables `PREFIX_KEY` override top-level keys and `PREFIX_TABLE__KEY` keys in
//! tables, e.g. `CBDC_LEDGER_LISTEN=127.0.0.1:7000` or `CBDC_LEDGER_TIERS__CLASS2__BALANCE_CAP`.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

/// A configuration that could not be loaded; the message names the file, key and problem.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// Loads `T` from the TOML file at `path` (if given), overridden by `env_prefix`* variables.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError(format!(
                "file {} does not exist",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(env_prefix).split("__"));
    figment.extract().map_err(|e| {
        let mut text = e.to_string();
        for more in e.into_iter().skip(1) {
            text.push_str("; ");
            text.push_str(&more.to_string());
        }
        ConfigError(text)
    })
}

/// A whole number from the environment variable `name`, or `default` when it is unset or not
/// a number (for benchmarks and tools, whose knobs are environment variables).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Loads `T` from TOML text (for tests and embedded defaults), overridden by the environment.
pub fn from_toml_str<T: DeserializeOwned>(text: &str, env_prefix: &str) -> Result<T, ConfigError> {
    Figment::new()
        .merge(Toml::string(text))
        .merge(Env::prefixed(env_prefix).split("__"))
        .extract()
        .map_err(|e| ConfigError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: String,
        #[serde(default)]
        depth: u32,
    }

    #[test]
    fn reads_toml_and_refuses_unknown_keys() {
        let ok: Sample =
            from_toml_str("listen = \"127.0.0.1:1\"\ndepth = 3", "CBDC_TEST_NONE_").unwrap();
        assert_eq!(
            ok,
            Sample {
                listen: "127.0.0.1:1".into(),
                depth: 3
            }
        );
        let err = from_toml_str::<Sample>("listen = \"x\"\nlisten_port = 3", "CBDC_TEST_NONE_")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = load::<Sample>(
            Some(Path::new("/nonexistent/ledger.toml")),
            "CBDC_TEST_NONE_",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/ledger.toml"), "{err}");
    }
}

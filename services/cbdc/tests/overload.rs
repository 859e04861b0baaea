//! Overload and abuse, short: `cbdc overload` with small phases against a bank ledger in its
//! own process — watch streams past the per-wallet bound, a flood of maximum-size batches
//! past the per-connection bound, idle connections past the connection cap — then its
//! checks: nothing acknowledged lost, no well-behaved transfer refused, every overload
//! refusal with retry advice, the ledger still running, the audit balanced. The p99 figures
//! are reported, not asserted (the full run is `cbdc overload`).

#[test]
fn abusive_clients_are_refused_with_advice_and_lose_nothing() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
        .args([
            "overload",
            "--phase-s",
            "6",
            "--rate",
            "100",
            "--wallets",
            "100",
            "--watch-streams",
            "900",
            "--flood-connections",
            "2",
            "--idle-connections",
            "300",
            "--connections-max",
            "200",
            "--json",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("cbdc runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let s: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary")).expect("JSON");
    assert_eq!(s["pass"], true, "{s}");
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    assert!(n("acknowledged") > 500, "{s}");
    assert_eq!(n("read_back_found"), n("acknowledged"), "{s}");
    assert_eq!(s["ledger_running"], true);
    assert_eq!(n("overload_without_retry_advice"), 0);
    // Each abuser met its bound and was told so.
    let refused = |k: &str, what: &str| {
        s[k].as_object()
            .unwrap()
            .iter()
            .any(|(kind, n)| kind.contains(what) && n.as_u64().unwrap() > 0)
    };
    assert!(
        refused("flood_refusals", "RESOURCE_EXHAUSTED (retry advice)"),
        "{s}"
    );
    assert!(n("flood_transfers_committed") > 0, "{s}");
    assert!(n("idle_closed_on_arrival") > 0, "the cap held: {s}");
    assert_eq!(n("watch_streams_open"), 800, "eight per wallet: {s}");
    assert!(
        refused("watch_refusals", "RESOURCE_EXHAUSTED (retry advice)"),
        "the ninth: {s}"
    );
}

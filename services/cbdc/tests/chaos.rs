//! The bank test, short: `cbdc chaos` for 20 s of faults (crashes, partitions, pauses) on a
//! seeded schedule against the central bank and two ledgers in their own processes, then
//! its checks (every acknowledged transfer read back at its position, every double spend
//! refused, nothing in flight, the audit balanced, the ledgers' checkpoints and their logs
//! replayed summing to what was issued less what was redeemed, every acknowledged
//! redemption counted by the central bank, every move between ledgers credited or reversed
//! exactly once). The full run is `cbdc chaos` (300 s of faults by default).

#[test]
fn the_bank_test_loses_nothing_through_crashes_partitions_and_pauses() {
    let out = tempfile::tempdir().unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_cbdc"))
        .args([
            "chaos",
            "--duration-s",
            "20",
            "--wallets",
            "40",
            "--transfers-per-wallet",
            "1500",
            "--concurrency",
            "16",
            "--fault-every-s",
            "1.5",
            "--seed",
            "20261130",
            "--json",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("cbdc runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary")).expect("JSON");
    assert_eq!(summary["pass"], true, "{summary}");
    let faults = summary["crashes"].as_u64().unwrap()
        + summary["partitions"].as_u64().unwrap()
        + summary["pauses"].as_u64().unwrap();
    assert!(faults >= 5, "too few faults to mean anything: {summary}");
    assert!(
        summary["transfers_acknowledged"].as_u64().unwrap() > 1000,
        "{summary}"
    );
    // The banks' orders ran beside the payments, and the redemptions reached the central
    // bank (checked against what it counts, and the logs replayed against what it issued).
    assert!(
        summary["exchanges_acknowledged"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["redemptions_acknowledged"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(
        summary["redeemed_acknowledged"], summary["redeemed_at_central_bank"],
        "{summary}"
    );
    assert_eq!(
        summary["replayed_unspent"], summary["issued_minus_redeemed"],
        "{summary}"
    );
    // Payment by payment, from the ledgers' logs: every acknowledged cross-ledger payment is
    // among the moves, and each move was credited or reversed exactly once.
    let moves = &summary["moves"];
    let between = moves["between_banks"].as_u64().unwrap();
    assert!(
        between >= summary["cross_ledger_acknowledged"].as_u64().unwrap() && between > 0,
        "{summary}"
    );
    assert_eq!(
        moves["credited_once"].as_u64().unwrap() + moves["reversed_once"].as_u64().unwrap(),
        between,
        "{summary}"
    );
    assert!(moves["to_central_bank"].as_u64().unwrap() > 0, "{summary}");
    // Payments to bank 2's unopened payees were refused there and came back.
    assert!(moves["credited_once"].as_u64().unwrap() > 0, "{summary}");
    assert!(moves["reversed_once"].as_u64().unwrap() > 0, "{summary}");
    let history = std::fs::read_to_string(out.path().join("history.jsonl")).unwrap();
    assert!(history.lines().count() > 2000);
}

//! A small chaos run inside `make test` (`make chaos` runs 10,000 assets).

use local_stack::chaos::{ChaosOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_keeps_every_promise() {
    let endpoint = local_stack::aws::local_endpoint().unwrap_or_else(|e| panic!("{e}"));
    let sdk = local_stack::aws::sdk_config(&endpoint).await;
    let options = ChaosOptions {
        assets: 400,
        // Higher rates than the big run, so that each path is taken at this size.
        error_rate: 0.08,
        timeout_rate: 0.02,
        kill_rate: 0.05,
        quota_limit: 120,
        // Longer than the five receives a message has (5 × 8 s): before messages waited on
        // refused credentials, every message received meanwhile was dead-lettered.
        outage_after: std::time::Duration::from_secs(2),
        outage: std::time::Duration::from_secs(45),
        ..ChaosOptions::default()
    };
    let report = run(&sdk, &options).await.expect("chaos run");
    report.print();
    assert_eq!(report.problems(), Vec::<String>::new());
    assert!(report.injected_errors > 0, "faults were injected");
    assert!(report.documents > 0, "multi-page documents were stored");
    assert!(
        report.unauthorized_answers > 0,
        "the credentials outage refused calls (none dead-lettered: see problems)"
    );
    assert!(
        report.killed_invocations > 0,
        "invocations were killed mid-batch"
    );
    assert!(
        report.rate_limited_answers > 0 && report.deferred > 0,
        "the quota bound and messages were deferred"
    );
    assert_eq!(
        report.by_status.values().sum::<u64>() as usize,
        report.assets + report.added - 1,
        "all but the oversize key have an item"
    );
    assert!(
        report.overwritten > 0 && report.monthly_limited.len() == 3,
        "images were uploaded again, some under the monthly limit"
    );
}

//! Small seeded runs of the simulation (`make sim` runs the large ones).

use std::time::Duration;

use super::*;

fn small(method: Method, assets: u64) -> SimConfig {
    SimConfig {
        assets,
        seed: 7,
        method,
        quota_per_hour: 500,
        concurrency: 8,
        // Faults well above the defaults, so that each path is taken at this size.
        faults: FaultMix {
            server_error: 0.03,
            timeout_after_billing: 0.01,
            too_many_requests: 0.02,
            pending: 0.05,
        },
        horizon: Duration::from_secs(7 * 24 * 3600),
        ..SimConfig::default()
    }
}

/// What two runs must agree on to be the same run.
fn fingerprint(r: &SimReport) -> String {
    format!(
        "{:?} {:?} {:?} {} {} {} {:?} {:?} {} {:?}",
        r.listed_at,
        r.terminal_at,
        r.by_status,
        r.cloudinary.billed,
        r.cloudinary.ocr_requests,
        r.cloudinary.read_backs,
        r.requests,
        r.dispositions,
        r.invocations,
        r.hours
    )
}

#[test]
fn an_explicit_run_ends_with_every_asset_terminal_and_each_paid_once() {
    let mut hours = 0;
    let r = run(&small(Method::Explicit, 3000), &mut |_| hours += 1);
    println!("{}", r.details());
    assert!(
        r.terminal_at.is_some(),
        "every asset terminal: {}",
        r.headline()
    );
    assert_eq!(r.terminal, 3000);
    assert_eq!(r.by_status.values().sum::<u64>(), 3000);
    assert_eq!(
        r.by_status.get("no_text"),
        Some(&600),
        "one in 5 has no text"
    );
    assert_eq!(r.cloudinary.billed, 3000, "each asset paid for once");
    assert_eq!(r.cloudinary.billed_twice, 0);
    assert!(
        r.cloudinary.server_errors > 0
            && r.cloudinary.timeouts_after_billing > 0
            && r.cloudinary.refused_429 > 0
            && r.cloudinary.pending_answers > 0,
        "every fault was met: {:?}",
        r.cloudinary
    );
    assert!(
        r.cloudinary.read_backs + r.cloudinary.bulk_assets >= r.cloudinary.pending_answers,
        "pending results and timed-out requests are read back, not paid again"
    );
    assert!(
        r.cloudinary.bulk_read_backs > 0 && r.cloudinary.bulk_assets > r.cloudinary.bulk_read_backs,
        "read back together, several assets a call: {:?}",
        r.cloudinary
    );
    assert!(r.dead_letters.is_empty(), "{:?}", r.dead_letters);
    assert_eq!(r.expired, 0);
    assert!(r.admin_peak <= 500, "the quota is never exceeded");
    assert_eq!(r.listing_stops.get("error"), None);
    assert_eq!(r.hours.len(), hours, "a progress call per simulated hour");
    assert!(r.dollars_per_million() > 0.0);
}

#[test]
fn the_same_seed_replays_the_same_run_and_another_differs() {
    let config = small(Method::Explicit, 1500);
    let a = run(&config, &mut |_| {});
    let b = run(&config, &mut |_| {});
    assert_eq!(fingerprint(&a), fingerprint(&b));
    let other = run(&SimConfig { seed: 8, ..config }, &mut |_| {});
    assert_ne!(
        fingerprint(&a),
        fingerprint(&other),
        "the seed decides the draws"
    );
}

#[test]
fn with_update_the_admin_quota_sets_the_pace_and_is_shared_with_the_listing() {
    let r = run(&small(Method::Update, 2000), &mut |_| {});
    println!("{}", r.details());
    assert!(r.terminal_at.is_some(), "{}", r.headline());
    assert_eq!(r.cloudinary.billed, 2000);
    assert_eq!(r.cloudinary.billed_twice, 0);
    assert!(
        r.admin_peak <= 500,
        "never over the quota: {}",
        r.admin_peak
    );
    // 2,000 requests, 5 listing calls and the read-backs, at 500 an hour: over four hours.
    let calls = 2000 + r.cloudinary.listing_calls + r.cloudinary.read_backs;
    let least = Duration::from_secs(3600 * (calls / 500));
    assert!(
        r.terminal_at.unwrap() >= least,
        "{:?} for {calls} calls",
        r.terminal_at
    );
    assert!(r.dispositions.get("DeferredQuota").copied().unwrap_or(0) > 0);
    assert!(r.hours.len() >= 4, "an hour's progress each: {:?}", r.hours);
    assert_eq!(r.bound_by(), "the Admin quota (OCR requests)");
    assert!(r.dead_letters.is_empty(), "{:?}", r.dead_letters);
}

#[test]
fn a_run_the_horizon_cuts_short_says_so_and_projects_its_end() {
    let config = SimConfig {
        quota_per_hour: 60,
        horizon: Duration::from_secs(2 * 24 * 3600),
        ..small(Method::Update, 5000)
    };
    let r = run(&config, &mut |_| {});
    assert_eq!(r.terminal_at, None);
    assert!(r.terminal < 5000);
    let projected = r.projected().expect("a pace to project");
    // About 60 calls an hour: the rest takes days more.
    assert!(
        projected > Duration::from_secs(3 * 24 * 3600),
        "{projected:?}"
    );
    assert!(report::table(std::slice::from_ref(&r)).contains("(horizon); about"));
}

#[test]
fn the_section_replaces_its_old_self_and_keeps_the_rest() {
    let doc = "# Benchmarks\n\nfigures\n";
    let once = report::with_section(doc, "## Simulation\n\nfirst\n");
    assert!(once.starts_with(doc.trim_end()));
    assert!(once.contains(report::SECTION_MARK) && once.ends_with("first\n"));
    let twice = report::with_section(&once, "## Simulation\n\nsecond\n");
    assert!(!twice.contains("first") && twice.contains("second"));
    assert_eq!(twice.matches(report::SECTION_MARK).count(), 1);
    assert_eq!(
        report::section_of(&twice),
        Some(&twice[twice.find(report::SECTION_MARK).unwrap()..])
    );
    assert_eq!(report::section_of(doc), None);
}

#[test]
fn the_model_names_each_fault_with_its_source_and_the_twin_drops_only_the_undocumented() {
    let base = SimConfig::default();
    let model = report::model(&base);
    let row = |what: &str| {
        model
            .iter()
            .find(|(w, ..)| *w == what)
            .unwrap_or_else(|| panic!("the model names {what}"))
            .clone()
    };
    for (what, share) in [
        ("HTTP 500", base.faults.server_error),
        ("timeout after billing", base.faults.timeout_after_billing),
        (
            "HTTP 429 from the Upload API",
            base.faults.too_many_requests,
        ),
        ("pending OCR answer", base.faults.pending),
    ] {
        let (_, value, ..) = row(what);
        let pct = format!("{} %", FaultMix::percent(share));
        assert!(value.starts_with(&pct), "{what}: {value} names {pct}");
    }
    assert_eq!(row("pending OCR answer").2, report::Source::Undocumented);
    let undocumented: Vec<_> = model
        .iter()
        .filter(|(.., source, _)| *source == report::Source::Undocumented)
        .map(|(what, ..)| *what)
        .collect();
    assert_eq!(
        undocumented,
        [
            "pending OCR answer",
            "OCR in an answer about several assets"
        ]
    );
    let run_twin = base.documented_only();
    assert!(base.has_undocumented() && !run_twin.has_undocumented());
    assert_eq!(run_twin.read_back, ReadBack::TogetherWithoutOcr);
    assert_eq!(base.read_back, ReadBack::Together);
    let twin = run_twin.faults;
    assert_eq!(twin.pending, 0.0);
    assert_eq!(
        (
            twin.server_error,
            twin.timeout_after_billing,
            twin.too_many_requests
        ),
        (
            base.faults.server_error,
            base.faults.timeout_after_billing,
            base.faults.too_many_requests
        )
    );
    let table = report::model_table(&base);
    assert!(
        table.contains("undocumented") && table.contains("assumed") && table.contains("documented")
    );
}

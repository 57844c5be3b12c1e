//! `cloudinary-emulator`: serves the emulated Cloudinary API until interrupted.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cloudinary_emulator::{
    Emulator, EmulatorConfig, NotificationFaults, generate, generate_uploads, load_corpus,
};

/// A local Cloudinary for the pipeline's demo and tests.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// JSON-lines corpus of assets ({"public_id":..,"created_at":..,"text":..,"tags":[..]}).
    #[arg(long)]
    corpus: Option<std::path::PathBuf>,
    /// Generate this many assets with awkward ids (added to the corpus, if any).
    #[arg(long, default_value_t = 0)]
    generate: usize,
    /// Generate `upload` images only (by default one in 50 is `private` and one in 50
    /// `authenticated`).
    #[arg(long)]
    uploads_only: bool,
    #[arg(long, default_value = "demo")]
    cloud_name: String,
    /// Milliseconds added to every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Share of OCR calls answered HTTP 500 (0..1).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of OCR calls that run (billed), then hang past the client's timeout (0..1).
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// Share of OCR calls that run (billed), then drop the connection (0..1).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Admin API calls allowed per window.
    #[arg(long, default_value_t = 100_000)]
    admin_limit: u64,
    /// Length of the Admin API quota window in seconds.
    #[arg(long, default_value_t = 3600)]
    admin_window_secs: u64,
    /// The OCR add-on's monthly limit: OCRs billed before further ones answer HTTP 420.
    #[arg(long, default_value_t = 1_000_000)]
    ocr_limit: u64,
    /// The account refuses SHA-1 signatures (and signs its notifications in SHA-256).
    #[arg(long)]
    require_sha256: bool,
    /// Share of notification deliveries never sent (0..1).
    #[arg(long, default_value_t = 0.0)]
    notification_lost_rate: f64,
    /// Share of notification deliveries sent twice (0..1).
    #[arg(long, default_value_t = 0.0)]
    notification_duplicate_rate: f64,
    /// Each notification delivery waits a random delay up to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    notification_delay_max_ms: u64,
    /// Share of notifications answered 2xx whose answer is lost, then retried (0..1).
    #[arg(long, default_value_t = 0.0)]
    notification_answer_lost_rate: f64,
    /// Retries of a failed notification request.
    #[arg(long, default_value_t = 3)]
    notification_retries: u32,
    /// Milliseconds between a failed notification request and its retry.
    #[arg(long, default_value_t = 180_000)]
    notification_retry_interval_ms: u64,
    /// `rename` gives the renamed asset a new version.
    #[arg(long)]
    rename_bumps_version: bool,
    /// `rename` notifications carry no `version`.
    #[arg(long)]
    rename_without_version: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let mut assets = match &args.corpus {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            load_corpus(&text).map_err(anyhow::Error::msg)?
        }
        None => Vec::new(),
    };
    assets.extend(if args.uploads_only {
        generate_uploads(args.generate)
    } else {
        generate(args.generate)
    });
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.error_rate),
        "--error-rate must be within 0..1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.timeout_rate),
        "--timeout-rate must be within 0..1"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.drop_rate)
            && args.error_rate + args.timeout_rate + args.drop_rate <= 1.0,
        "--drop-rate must be within 0..1, and the three rates together at most 1"
    );
    for (name, rate) in [
        ("--notification-lost-rate", args.notification_lost_rate),
        (
            "--notification-duplicate-rate",
            args.notification_duplicate_rate,
        ),
        (
            "--notification-answer-lost-rate",
            args.notification_answer_lost_rate,
        ),
    ] {
        anyhow::ensure!((0.0..=1.0).contains(&rate), "{name} must be within 0..1");
    }
    let mut config = EmulatorConfig::new(&args.cloud_name);
    config.latency = Duration::from_millis(args.latency_ms);
    config.error_rate = args.error_rate;
    config.timeout_rate = args.timeout_rate;
    config.drop_rate = args.drop_rate;
    config.admin_limit = args.admin_limit;
    config.admin_window = Duration::from_secs(args.admin_window_secs);
    config.ocr_limit = args.ocr_limit;
    config.require_sha256 = args.require_sha256;
    config.rename_bumps_version = args.rename_bumps_version;
    config.rename_carries_version = !args.rename_without_version;
    config.notification_faults = NotificationFaults {
        lost_rate: args.notification_lost_rate,
        duplicate_rate: args.notification_duplicate_rate,
        delay_max: Duration::from_millis(args.notification_delay_max_ms),
        answer_lost_rate: args.notification_answer_lost_rate,
        max_retries: args.notification_retries,
        retry_interval: Duration::from_millis(args.notification_retry_interval_ms),
    };
    let count = assets.len();
    let emulator = Emulator::start(config, assets, args.port).await?;
    println!("listening on {} with {count} assets", emulator.base_url());
    // The URL carries this run's random credentials; it is printed once, for the local user.
    println!("CLOUDINARY_API_BASE={}", emulator.base_url());
    println!("CLOUDINARY_URL={}", emulator.cloudinary_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

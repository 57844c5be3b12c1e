//! Logging set-up shared by the functions and the local tools.

use tracing_subscriber::EnvFilter;

/// JSON logs (one object per line, as CloudWatch Logs Insights reads them), level from
/// `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init_json_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ignored_if_already_set = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .without_time()
        .with_target(false)
        .try_init();
}

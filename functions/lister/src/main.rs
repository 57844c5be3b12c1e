//! Lambda entry point of the lister: configuration and clients once per cold start.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use shared::lister::RunSummary;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn init() -> Result<lister::SqsLister, Error> {
    let sdk = shared::aws::function_config().await;
    let cloudinary_url = shared::secrets::cloudinary_url(&sdk).await?;
    let config = shared::config::Env::process().lister(cloudinary_url)?;
    Ok(lister::build(&config, &sdk)?)
}

// One thread: a function has a fraction of a vCPU below 1,769 MB, and its work is waiting on
// I/O; a multi-thread runtime only adds wake-ups between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    shared::telemetry::init_json_logs();
    // A failure that ends the process is a FATAL line, not an error returned from `main`
    // (which Rust prints as plain text, with no level for Lambda's filter).
    let lister = match init().await {
        Ok(lister) => lister,
        Err(e) => return shared::telemetry::log_fatal("lister start-up failed", e.as_ref()),
    };
    let ran = lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let deadline =
            (UNIX_EPOCH + Duration::from_millis(event.context.deadline)).max(SystemTime::now());
        let lister = &lister;
        async move {
            let summary = lister::handle(lister, event.payload, deadline)
                .await
                .map_err(|e| {
                    // The runtime does not log handler errors itself.
                    let chain = shared::error::error_chain(&e);
                    tracing::error!(error = %chain, "lister run failed");
                    Error::from(chain)
                })?;
            shared::telemetry::emit_metrics("lister", &lister::run_metrics(&summary));
            Ok::<RunSummary, Error>(summary)
        }
    }))
    .await;
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => shared::telemetry::log_fatal("the runtime loop ended", e.as_ref()),
    }
}

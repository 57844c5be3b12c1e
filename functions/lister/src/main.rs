//! Lambda entry point of the lister: configuration and clients once per cold start.

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
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logs();
    let lister = init().await.inspect_err(|e| {
        tracing::error!(error = %shared::error::error_chain(e.as_ref()), "lister start-up failed");
    })?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
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
    .await
}

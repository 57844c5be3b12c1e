//! Lambda entry point of the lister: configuration and clients once per cold start.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init_json_logs();
    let sdk = aws_config::load_from_env().await;
    let cloudinary_url = shared::secrets::cloudinary_url(&sdk).await?;
    let config = shared::config::Env::process().lister(cloudinary_url)?;
    let lister = lister::build(&config, &sdk)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let deadline =
            (UNIX_EPOCH + Duration::from_millis(event.context.deadline)).max(SystemTime::now());
        let lister = &lister;
        async move {
            lister::handle(lister, event.payload, deadline)
                .await
                .map_err(|e| {
                    // The runtime does not log handler errors itself.
                    tracing::error!(error = ?e, "lister run failed");
                    Error::from(shared::error::error_chain(&e))
                })
        }
    }))
    .await
}

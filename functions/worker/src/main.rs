//! Lambda entry point of the worker: configuration and clients once per cold start.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn init() -> Result<worker::LiveWorker, Error> {
    let sdk = shared::aws::function_config().await;
    let cloudinary_url = shared::secrets::cloudinary_url(&sdk).await?;
    // A missing or malformed secret does not fail the start (every batch would then go back to
    // the queue and on to the dead-letter queue, with no reason): the worker answers every
    // message as refused credentials, so they wait, and the credentials alarm says why.
    let config = shared::config::Env::process().worker_waiting_on_secret(cloudinary_url)?;
    if let Some(fault) = &config.cloudinary.credentials_fault {
        tracing::error!(%fault, "the Cloudinary secret cannot be used; messages wait until it is fixed");
    }
    tracing::info!(ocr_method = %config.cloudinary.ocr_method, concurrency = config.concurrency, "worker ready");
    Ok(worker::LiveWorker::new(
        config,
        sdk,
        shared::secrets::secret_arn(),
    )?)
}

// One thread: a function has a fraction of a vCPU below 1,769 MB, and its work is waiting on
// I/O; a multi-thread runtime only adds wake-ups between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    shared::telemetry::init_json_logs();
    // A failure that ends the process is a FATAL line, not an error returned from `main`
    // (which Rust prints as plain text, with no level for Lambda's filter).
    let worker = match init().await {
        Ok(worker) => worker,
        Err(e) => return shared::telemetry::log_fatal("worker start-up failed", e.as_ref()),
    };
    let ran = lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
        let live = &worker;
        async move {
            let deadline = deadline.max(SystemTime::now());
            let (response, outcome) =
                worker::handle_with_outcome(&live.current(), event.payload, deadline).await?;
            shared::telemetry::emit_metrics("worker", &worker::batch_metrics(&outcome));
            live.after_batch(&outcome).await;
            Ok::<_, Error>(response)
        }
    }))
    .await;
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => shared::telemetry::log_fatal("the runtime loop ended", e.as_ref()),
    }
}

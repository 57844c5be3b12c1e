//! Lambda entry point of the notifier: configuration and clients once per cold start, then
//! each Function URL request through [`notifier::answer`].

use std::process::ExitCode;
use std::time::SystemTime;

use lambda_http::{Body, Error, Request, Response, service_fn};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn init() -> Result<notifier::LiveNotifier, Error> {
    let sdk = shared::aws::function_config().await;
    // Without the secret no notification can be verified: the start fails (Cloudinary's
    // requests are answered 502 and sent again; the errors alarm says why).
    let cloudinary_url = shared::secrets::cloudinary_url(&sdk).await?;
    let config = shared::config::Env::process().notifier(cloudinary_url)?;
    tracing::info!(
        keep_deleted_text = config.settings.keep_deleted_text,
        max_age_s = config.settings.max_age.as_secs(),
        "notifier ready"
    );
    Ok(notifier::live(config, &sdk))
}

// One thread: each request waits on DynamoDB and SQS only.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    shared::telemetry::init_json_logs();
    let live = match init().await {
        Ok(live) => live,
        Err(e) => return shared::telemetry::log_fatal("notifier start-up failed", e.as_ref()),
    };
    let live = &live;
    let ran = lambda_http::run(service_fn(move |request: Request| async move {
        let method = request.method().as_str().to_string();
        let (status, body, outcome) = notifier::answer(
            live,
            &method,
            request.headers(),
            request.body().as_ref(),
            SystemTime::now(),
        )
        .await;
        shared::telemetry::emit_metrics("notifier", &outcome.metrics());
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(Error::from)
    }))
    .await;
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => shared::telemetry::log_fatal("the runtime loop ended", e.as_ref()),
    }
}

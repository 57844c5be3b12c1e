//! AWS SDK configuration for the local endpoint.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Variable holding the local AWS endpoint (moto), set by `infra/scripts/moto.sh run`.
pub const ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL";

/// The local endpoint, or an error telling how to start one.
pub fn local_endpoint() -> Result<String, String> {
    std::env::var(ENDPOINT_VAR)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!(
                "{ENDPOINT_VAR} is not set: the local AWS endpoint (moto) is not running. \
             Run through `make test` / `make demo`, or `infra/scripts/moto.sh run <command>`."
            )
        })
}

/// SDK configuration for moto at `endpoint`: a fixed region and placeholder credentials
/// (moto accepts any; no real credentials are involved locally).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let placeholder =
        aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "local-stack");
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(placeholder)
        .load()
        .await
}

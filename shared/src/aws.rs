//! The AWS SDK configuration the Lambda functions run with.

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::defaults::{AWS_ATTEMPT_TIMEOUT, AWS_OPERATION_TIMEOUT};

/// The functions' SDK configuration: the environment's region, credentials and endpoint, with
/// every DynamoDB, SQS and Secrets Manager call bounded in time (the SDK sets no limit of its
/// own beyond connecting), so that a call that hangs fails and is retried or released instead
/// of holding the invocation until Lambda ends it. The bounds also make the SDK's stalled-stream
/// protection redundant for these small, buffered bodies: it is off, as it watches every body's
/// throughput on a timer and costs CPU on each request.
pub async fn function_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .load()
        .await
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(AWS_ATTEMPT_TIMEOUT)
        .operation_timeout(AWS_OPERATION_TIMEOUT)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_bounded_and_an_attempt_within_its_call() {
        let t = timeouts();
        assert_eq!(t.operation_attempt_timeout(), Some(AWS_ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(AWS_OPERATION_TIMEOUT));
        assert!(AWS_ATTEMPT_TIMEOUT * 3 <= AWS_OPERATION_TIMEOUT);
    }
}

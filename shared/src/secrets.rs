//! `CLOUDINARY_URL` from Secrets Manager, read at cold start and again when Cloudinary
//! refuses the credentials (a rotated secret).

use aws_sdk_secretsmanager::Client;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading secret {arn} from Secrets Manager failed")]
    Read {
        arn: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("secret {arn} has no string value; store CLOUDINARY_URL as plain text")]
    Empty { arn: String },
}

/// In AWS, `CLOUDINARY_SECRET_ARN` names the secret holding `CLOUDINARY_URL` (plain text, or
/// JSON `{"CLOUDINARY_URL": "..."}`). Without it, `None`: the caller reads the environment.
pub async fn cloudinary_url(sdk: &aws_config::SdkConfig) -> Result<Option<Secret>, SecretError> {
    match secret_arn() {
        Some(arn) => read_cloudinary_url(sdk, &arn).await.map(Some),
        None => Ok(None),
    }
}

/// `CLOUDINARY_SECRET_ARN`, when set.
pub fn secret_arn() -> Option<String> {
    std::env::var("CLOUDINARY_SECRET_ARN")
        .ok()
        .filter(|v| !v.is_empty())
}

/// The `CLOUDINARY_URL` the secret `arn` holds now.
pub async fn read_cloudinary_url(
    sdk: &aws_config::SdkConfig,
    arn: &str,
) -> Result<Secret, SecretError> {
    let arn = arn.to_string();
    let out = Client::new(sdk)
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .map_err(|e| SecretError::Read {
            arn: arn.clone(),
            source: Box::new(e),
        })?;
    let raw = out
        .secret_string()
        .ok_or_else(|| SecretError::Empty { arn: arn.clone() })?;
    Ok(Secret::new(unwrap_json(raw)))
}

fn unwrap_json(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("CLOUDINARY_URL")
                .and_then(|u| u.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| raw.trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_and_json_secret_values() {
        assert_eq!(
            super::unwrap_json(" cloudinary://a:b@c\n"),
            "cloudinary://a:b@c"
        );
        assert_eq!(
            super::unwrap_json(r#"{"CLOUDINARY_URL":"cloudinary://a:b@c"}"#),
            "cloudinary://a:b@c"
        );
    }
}

//! The account that must own the buckets `ocr-ctl` reads and writes. Every S3 request it makes
//! carries that account as `x-amz-expected-bucket-owner` (the API's `ExpectedBucketOwner`), and
//! S3 answers 403 when the bucket is another account's: an export of the OCR'd text never goes
//! to a bucket someone else owns under the expected name (a typo, a bucket deleted and taken
//! by another account), and no file is read back from one.
//!
//! The header is set by the client ([`OwnerCheckedS3`]), not call by call: every operation
//! sent through it carries the header, those added later too, and no S3 client is built here
//! any other way.

use std::ops::Deref;

use anyhow::{Context, bail};
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};

/// The header S3 reads `ExpectedBucketOwner` from.
pub const HEADER: &str = "x-amz-expected-bucket-owner";

/// An AWS account id: twelve digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketOwner(String);

impl BucketOwner {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for BucketOwner {
    type Err = anyhow::Error;
    fn from_str(account: &str) -> anyhow::Result<Self> {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            bail!("{account:?} is not an AWS account id (twelve digits, as 123456789012)");
        }
        Ok(Self(account.to_string()))
    }
}

impl std::fmt::Display for BucketOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account field of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`).
pub fn account_of_arn(arn: &str) -> Option<&str> {
    let mut fields = arn.splitn(6, ':');
    (fields.next()? == "arn").then_some(())?;
    let account = fields.nth(3)?;
    fields.next()?;
    Some(account)
}

/// Where the owner is taken from, first found first: `--bucket-owner`, else the account of the
/// named stack (its ARN), else the account of the credentials (STS GetCallerIdentity).
pub async fn resolve(
    given: Option<&BucketOwner>,
    stack_id: Option<&str>,
    sdk: &aws_config::SdkConfig,
) -> anyhow::Result<BucketOwner> {
    if let Some(owner) = given {
        return Ok(owner.clone());
    }
    if let Some(arn) = stack_id {
        let account = account_of_arn(arn).with_context(|| {
            format!("the stack's id {arn:?} is not an ARN; give --bucket-owner ACCOUNT")
        })?;
        return account
            .parse()
            .context("the stack's ARN; give --bucket-owner ACCOUNT");
    }
    let identity = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .context("asking STS which account these credentials belong to (the buckets' expected owner); or give --bucket-owner ACCOUNT")?;
    identity
        .account()
        .context("STS named no account; give --bucket-owner ACCOUNT")?
        .parse()
        .context("the account STS named")
}

/// An S3 client whose every request names the account that must own its bucket.
#[derive(Debug, Clone)]
pub struct OwnerCheckedS3 {
    client: aws_sdk_s3::Client,
    owner: BucketOwner,
}

impl OwnerCheckedS3 {
    /// Path-style addressing when an endpoint is set (a local S3 such as moto).
    pub fn new(sdk: &aws_config::SdkConfig, owner: BucketOwner) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .interceptor(ExpectOwner(owner.clone()))
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(conf),
            owner,
        }
    }

    pub fn owner(&self) -> &BucketOwner {
        &self.owner
    }
}

impl Deref for OwnerCheckedS3 {
    type Target = aws_sdk_s3::Client;
    fn deref(&self) -> &aws_sdk_s3::Client {
        &self.client
    }
}

/// Sets [`HEADER`] on each request before it is signed (S3 requires its `x-amz-` headers
/// signed), on every attempt.
#[derive(Debug)]
struct ExpectOwner(BucketOwner);

impl Intercept for ExpectOwner {
    fn name(&self) -> &'static str {
        "ExpectOwner"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert(HEADER, self.0.as_str().to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_twelve_digits() {
        assert_eq!(
            "123456789012".parse::<BucketOwner>().unwrap().as_str(),
            "123456789012"
        );
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            " 123456789012",
            "１２３４５６７８９０１２",
        ] {
            let err = bad.parse::<BucketOwner>().unwrap_err();
            assert!(err.to_string().contains("twelve digits"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_account_is_the_arn_s_fifth_field() {
        assert_eq!(
            account_of_arn(
                "arn:aws:cloudformation:eu-west-1:123456789012:stack/ocr/0a1b2c3d-0000-0000-0000-000000000000"
            ),
            Some("123456789012")
        );
        assert_eq!(
            account_of_arn("arn:aws-cn:cloudformation:cn-north-1:210987654321:stack/a:b/c"),
            Some("210987654321")
        );
        assert_eq!(account_of_arn("ocr-stack"), None);
        assert_eq!(account_of_arn("arn:aws:s3:::bucket"), Some(""));
        assert_eq!(account_of_arn("arn:aws:cloudformation:eu-west-1"), None);
    }
}

//! What the Cloudinary client is configured with: the account's credentials, the API's base
//! URL, the call timeout and how OCR is switched on. Apart from the HTTP client, so that the
//! configuration can build it without depending on the client.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::Secret;

/// Default Cloudinary API base URL.
pub const DEFAULT_API_BASE: &str = "https://api.cloudinary.com";

/// What the client needs to talk to Cloudinary.
#[derive(Debug, Clone)]
pub struct CloudinaryConfig {
    pub credentials: CloudinaryCredentials,
    pub api_base: String,
    pub timeout: Duration,
    pub ocr_method: OcrMethod,
    /// The hash Upload API signatures use: the account's setting (SHA-1 unless the account
    /// requires SHA-256).
    pub signature_algorithm: SignatureAlgorithm,
    /// Why the configured `CLOUDINARY_URL` cannot be used (malformed or missing), when the
    /// worker started anyway: every call is then answered as refused credentials, so messages
    /// wait for the secret to be fixed instead of failing.
    pub credentials_fault: Option<String>,
}

/// The hash of an Upload API signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureAlgorithm {
    #[default]
    Sha1,
    Sha256,
}

impl FromStr for SignatureAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            other => Err(format!("{other:?} is not one of: sha1, sha256")),
        }
    }
}

/// `cloudinary://API_KEY:API_SECRET@CLOUD_NAME`, the ecosystem's convention.
#[derive(Clone, PartialEq, Eq)]
pub struct CloudinaryCredentials {
    pub api_key: String,
    pub api_secret: Secret,
    pub cloud_name: String,
}

impl fmt::Debug for CloudinaryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudinaryCredentials")
            .field("api_key", &self.api_key)
            .field("api_secret", &self.api_secret)
            .field("cloud_name", &self.cloud_name)
            .finish()
    }
}

impl CloudinaryCredentials {
    /// Parses `CLOUDINARY_URL`. Errors never repeat the value (it holds the secret).
    pub fn parse(url: &Secret) -> Result<Self, String> {
        let raw = url.expose().trim();
        let rest = raw.strip_prefix("cloudinary://").ok_or_else(|| {
            "must start with cloudinary:// (cloudinary://API_KEY:API_SECRET@CLOUD_NAME)".to_string()
        })?;
        // Query options (e.g. `?secure=true`) are accepted and ignored.
        let rest = rest.split('?').next().unwrap_or_default();
        let (userinfo, cloud_name) = rest.rsplit_once('@').ok_or_else(|| {
            "missing @CLOUD_NAME (cloudinary://API_KEY:API_SECRET@CLOUD_NAME)".to_string()
        })?;
        let (api_key, api_secret) = userinfo.split_once(':').ok_or_else(|| {
            "missing API_KEY:API_SECRET (cloudinary://API_KEY:API_SECRET@CLOUD_NAME)".to_string()
        })?;
        let cloud_name = cloud_name.trim_end_matches('/');
        if api_key.is_empty() || api_secret.is_empty() || cloud_name.is_empty() {
            return Err("API_KEY, API_SECRET and CLOUD_NAME must all be non-empty".into());
        }
        Ok(Self {
            api_key: api_key.to_string(),
            api_secret: Secret::new(api_secret),
            cloud_name: cloud_name.to_string(),
        })
    }
}

/// How OCR is switched on for an existing asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OcrMethod {
    /// Upload API `explicit`, signed: not counted against the Admin API's hourly quota,
    /// which is then left entirely to listing.
    #[default]
    Explicit,
    /// Admin API update with `ocr=adv_ocr` (HTTP Basic auth): one hourly-quota call per image.
    AdminUpdate,
}

impl FromStr for OcrMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "explicit" => Ok(Self::Explicit),
            "update" | "admin" => Ok(Self::AdminUpdate),
            other => Err(format!("{other:?} is not one of: explicit, update")),
        }
    }
}

impl fmt::Display for OcrMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Explicit => "explicit",
            Self::AdminUpdate => "update",
        })
    }
}

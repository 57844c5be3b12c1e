//! Cloudinary client: listing, search, enabling OCR (Admin API update or Upload API explicit)
//! and reading a resource back, with the quota headers of every answer.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::config::{CloudinaryConfig, Secret};
use crate::error::{Classified, ErrorClass};

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

/// What Cloudinary's SDKs leave unescaped in a public_id travelling in a URL path:
/// `[a-zA-Z0-9_.-/:]`; everything else is UTF-8 percent-encoded.
const PUBLIC_ID_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'/')
    .remove(b':');

/// Encodes a public_id for a URL path exactly as Cloudinary's SDKs do (folders kept).
pub fn encode_public_id(public_id: &str) -> String {
    utf8_percent_encode(public_id, PUBLIC_ID_SAFE).to_string()
}

/// The Admin API's hourly quota as reported on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub remaining: u64,
    pub reset: Option<SystemTime>,
}

impl Quota {
    /// Reads `X-FeatureRateLimit-Limit/-Remaining/-Reset`; `None` when absent (Upload API).
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Option<Self> {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let limit = get("x-featureratelimit-limit")?.parse().ok()?;
        let remaining = get("x-featureratelimit-remaining")?.parse().ok()?;
        let reset = get("x-featureratelimit-reset").and_then(|v| httpdate::parse_http_date(v).ok());
        Some(Self {
            limit,
            remaining,
            reset,
        })
    }
}

/// A decoded answer and the quota it reported.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub value: T,
    pub quota: Option<Quota>,
    pub latency: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudinaryError {
    #[error("cloudinary answered HTTP {status} for {what}: {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
        retry_at: Option<SystemTime>,
    },
    #[error("cloudinary request for {what} failed")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cloudinary answer for {what} is not the expected JSON")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Classified for CloudinaryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Status { status, .. } => match status {
                420 | 429 => ErrorClass::RateLimited,
                // Bad credentials are a configuration fault: retried (and alarmed on), never
                // dead-lettered at once, so that fixing the secret recovers every message.
                401 | 403 | 408 => ErrorClass::Transient,
                s if *s >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            Self::Transport { .. } | Self::Decode { .. } => ErrorClass::Transient,
        }
    }

    fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Self::Status { retry_at, .. } => *retry_at,
            _ => None,
        }
    }
}

/// One asset as listed by the Admin API or the Search API.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ListedAsset {
    pub public_id: String,
    #[serde(default = "default_resource_type")]
    pub resource_type: String,
    #[serde(rename = "type", default = "default_delivery_type")]
    pub delivery_type: String,
    #[serde(default)]
    pub created_at: Option<String>,
}

fn default_resource_type() -> String {
    "image".into()
}
fn default_delivery_type() -> String {
    "upload".into()
}

/// A page of a listing.
#[derive(Debug, Clone, Deserialize)]
pub struct AssetPage {
    #[serde(default)]
    pub resources: Vec<ListedAsset>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}
#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

/// Signs Upload API parameters (signature version 2, SHA-1), as Cloudinary's SDKs do:
/// non-empty `k=v` pairs sorted by key, joined by `&` (with `&` in values written `%26`),
/// the API secret appended, hex-encoded.
pub fn sign_upload_params(params: &[(&str, &str)], api_secret: &Secret) -> String {
    use sha1::{Digest, Sha1};
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let to_sign = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('&', "%26")))
        .collect::<Vec<_>>()
        .join("&");
    let mut hasher = Sha1::new();
    hasher.update(to_sign.as_bytes());
    hasher.update(api_secret.expose().as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The HTTP client could not be built (TLS set-up).
#[derive(Debug, thiserror::Error)]
#[error("building the Cloudinary HTTP client failed")]
pub struct ClientBuildError(#[from] reqwest::Error);

/// HTTP client for the slice of Cloudinary the pipeline uses.
#[derive(Debug, Clone)]
pub struct CloudinaryClient {
    http: reqwest::Client,
    api_base: String,
    credentials: CloudinaryCredentials,
    ocr_method: OcrMethod,
}

impl CloudinaryClient {
    pub fn new(config: &CloudinaryConfig) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!(
                "cloudinary-ocr-pipeline/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self {
            http,
            api_base: config.api_base.clone(),
            credentials: config.credentials.clone(),
            ocr_method: config.ocr_method,
        })
    }

    pub fn cloud_name(&self) -> &str {
        &self.credentials.cloud_name
    }

    pub fn ocr_method(&self) -> OcrMethod {
        self.ocr_method
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1_1/{}/{}",
            self.api_base, self.credentials.cloud_name, path
        )
    }

    fn admin(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.basic_auth(
            &self.credentials.api_key,
            Some(self.credentials.api_secret.expose()),
        )
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: String,
        req: reqwest::RequestBuilder,
    ) -> Result<Answer<T>, CloudinaryError> {
        let started = std::time::Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|source| CloudinaryError::Transport {
                what: what.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        let quota = Quota::from_headers(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|source| CloudinaryError::Transport {
                what: what.clone(),
                source,
            })?;
        let latency = started.elapsed();
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect());
            let retry_at = match status {
                420 | 429 => quota
                    .and_then(|q| q.reset)
                    .or_else(|| Some(SystemTime::now() + Duration::from_secs(60))),
                _ => None,
            };
            return Err(CloudinaryError::Status {
                what,
                status,
                message,
                retry_at,
            });
        }
        let value = serde_json::from_slice(&body)
            .map_err(|source| CloudinaryError::Decode { what, source })?;
        Ok(Answer {
            value,
            quota,
            latency,
        })
    }

    /// One page of `GET resources/image/upload` (Admin API).
    pub async fn list_page(
        &self,
        cursor: Option<&str>,
        max_results: u32,
    ) -> Result<Answer<AssetPage>, CloudinaryError> {
        let mut query = vec![("max_results", max_results.to_string())];
        if let Some(c) = cursor {
            query.push(("next_cursor", c.to_string()));
        }
        let req = self.admin(
            self.http
                .get(self.url("resources/image/upload"))
                .query(&query),
        );
        self.send("the asset listing".into(), req).await
    }

    /// One page of `POST resources/search` (Admin API), oldest first.
    pub async fn search_page(
        &self,
        expression: &str,
        cursor: Option<&str>,
        max_results: u32,
    ) -> Result<Answer<AssetPage>, CloudinaryError> {
        let mut body = serde_json::json!({
            "expression": expression,
            "max_results": max_results,
            "sort_by": [{"created_at": "asc"}],
        });
        if let Some(c) = cursor {
            body["next_cursor"] = c.into();
        }
        let req = self.admin(self.http.post(self.url("resources/search")).json(&body));
        self.send(format!("the search {expression:?}"), req).await
    }

    /// Switches OCR on for an existing asset and returns the resource with `info.ocr`.
    pub async fn request_ocr(
        &self,
        public_id: &str,
        resource_type: &str,
        delivery_type: &str,
    ) -> Result<Answer<serde_json::Value>, CloudinaryError> {
        let what = format!("OCR of {public_id:?}");
        let req = match self.ocr_method {
            OcrMethod::AdminUpdate => self.admin(
                self.http
                    .post(self.url(&format!(
                        "resources/{}/{}/{}",
                        encode_public_id(resource_type),
                        encode_public_id(delivery_type),
                        encode_public_id(public_id)
                    )))
                    .form(&[("ocr", "adv_ocr")]),
            ),
            OcrMethod::Explicit => {
                let timestamp = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs()
                    .to_string();
                let signed = [
                    ("ocr", "adv_ocr"),
                    ("public_id", public_id),
                    ("timestamp", timestamp.as_str()),
                    ("type", delivery_type),
                ];
                let signature = sign_upload_params(&signed, &self.credentials.api_secret);
                let mut form: Vec<(&str, &str)> = signed.to_vec();
                form.push(("api_key", &self.credentials.api_key));
                form.push(("signature", &signature));
                self.http
                    .post(self.url(&format!("{}/explicit", encode_public_id(resource_type))))
                    .form(&form)
            }
        };
        self.send(what, req).await
    }

    /// Reads a resource's details (no OCR is started, no OCR is billed).
    pub async fn get_resource(
        &self,
        public_id: &str,
        resource_type: &str,
        delivery_type: &str,
    ) -> Result<Answer<serde_json::Value>, CloudinaryError> {
        let url = self.url(&format!(
            "resources/{}/{}/{}",
            encode_public_id(resource_type),
            encode_public_id(delivery_type),
            encode_public_id(public_id)
        ));
        self.send(
            format!("details of {public_id:?}"),
            self.admin(self.http.get(url)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ids_are_encoded_like_the_sdks() {
        assert_eq!(
            encode_public_id("folder/my file?#.jpg"),
            "folder/my%20file%3F%23.jpg"
        );
        assert_eq!(
            encode_public_id("street signs/stop & go?"),
            "street%20signs/stop%20%26%20go%3F"
        );
        assert_eq!(
            encode_public_id("menüs/café-crème"),
            "men%C3%BCs/caf%C3%A9-cr%C3%A8me"
        );
        assert_eq!(encode_public_id("a+b%c~d:e_f"), "a%2Bb%25c%7Ed:e_f");
    }

    #[test]
    fn credentials_parse_and_reject_without_echoing_the_secret() {
        let c = CloudinaryCredentials::parse(&Secret::new("cloudinary://123:abc-def@my-cloud"))
            .unwrap();
        assert_eq!(
            (
                c.api_key.as_str(),
                c.api_secret.expose(),
                c.cloud_name.as_str()
            ),
            ("123", "abc-def", "my-cloud")
        );
        for bad in [
            "https://x",
            "cloudinary://123@cloud",
            "cloudinary://123:abc",
            "cloudinary://:abc@c",
        ] {
            let err = CloudinaryCredentials::parse(&Secret::new(bad)).unwrap_err();
            assert!(!err.contains("abc"), "{err}");
        }
    }

    /// Vectors computed independently with Python:
    /// `hashlib.sha1(b"ocr=adv_ocr&public_id=...&timestamp=...&type=upload" + secret).hexdigest()`.
    #[test]
    fn upload_signature_matches_independent_vectors() {
        let secret = Secret::new("abcd");
        assert_eq!(
            sign_upload_params(
                &[
                    ("timestamp", "1315060510"),
                    ("public_id", "sample"),
                    ("type", "upload"),
                    ("ocr", "adv_ocr")
                ],
                &secret
            ),
            "bfca2622883f0e4a83a72916edf56cb50842f1a1"
        );
        // `&` inside a value is written %26 before hashing; empty values are left out.
        assert_eq!(
            sign_upload_params(
                &[
                    ("public_id", "street signs/stop & go?"),
                    ("timestamp", "1700000000"),
                    ("type", "upload"),
                    ("ocr", "adv_ocr"),
                    ("tags", "")
                ],
                &secret
            ),
            "9a93cdb1445962e6f9e527e4cba6f3b9b25135ff"
        );
    }

    #[test]
    fn rate_limit_errors_carry_their_class() {
        let e = CloudinaryError::Status {
            what: "x".into(),
            status: 420,
            message: "Rate Limit Exceeded".into(),
            retry_at: None,
        };
        assert_eq!(e.class(), ErrorClass::RateLimited);
        let e = CloudinaryError::Status {
            what: "x".into(),
            status: 404,
            message: "nf".into(),
            retry_at: None,
        };
        assert_eq!(e.class(), ErrorClass::Permanent);
        let e = CloudinaryError::Status {
            what: "x".into(),
            status: 503,
            message: "busy".into(),
            retry_at: None,
        };
        assert_eq!(e.class(), ErrorClass::Transient);
    }

    #[test]
    fn quota_headers_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("X-FeatureRateLimit-Limit", "500".parse().unwrap());
        h.insert("X-FeatureRateLimit-Remaining", "12".parse().unwrap());
        h.insert(
            "X-FeatureRateLimit-Reset",
            "Wed, 25 Nov 2026 04:00:00 GMT".parse().unwrap(),
        );
        let q = Quota::from_headers(&h).unwrap();
        assert_eq!((q.limit, q.remaining), (500, 12));
        assert_eq!(
            q.reset.unwrap(),
            httpdate::parse_http_date("Wed, 25 Nov 2026 04:00:00 GMT").unwrap()
        );
        assert!(Quota::from_headers(&reqwest::header::HeaderMap::new()).is_none());
    }
}

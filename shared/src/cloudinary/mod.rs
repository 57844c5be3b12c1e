//! Cloudinary client: listing, search, enabling OCR (Admin API update or Upload API explicit)
//! and reading a resource back, with the quota headers of every answer.

pub mod settings;
pub mod triggers;

use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::error::{Classified, ErrorClass, RemoteError};
use crate::lister::{AddonUsage, AssetPage, AssetSource, ListedAsset, Listing};
use crate::message::WorkMessage;
use crate::ocr::{OcrOutcome, OcrResult, ResourceAnswer};
use crate::rate_gate::Quota;
use crate::secret::Secret;
use crate::worker::{BulkAnswer, OcrAnswer, OcrService};

pub use settings::{
    CloudinaryConfig, CloudinaryCredentials, DEFAULT_API_BASE, OcrMethod, SignatureAlgorithm,
};

/// What Cloudinary's SDKs leave unescaped in a public_id travelling in a URL path:
/// `[a-zA-Z0-9_.-/:]`; everything else is UTF-8 percent-encoded.
const PUBLIC_ID_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'/')
    .remove(b':');

const TAG_SAFE: &AsciiSet = &PUBLIC_ID_SAFE.add(b'/');

/// Encodes a public_id for a URL path exactly as Cloudinary's SDKs do (folders kept).
pub fn encode_public_id(public_id: &str) -> String {
    utf8_percent_encode(public_id, PUBLIC_ID_SAFE).to_string()
}

/// The Admin API path of one resource, refused when a part of it would change the path: a `.`
/// or `..` segment (escaped or not, URL resolution collapses it) or a type with a slash.
pub fn resource_path(
    resource_type: &str,
    delivery_type: &str,
    public_id: &str,
) -> Result<String, CloudinaryError> {
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if !plain(resource_type) || !plain(delivery_type) {
        return Err(CloudinaryError::Refused {
            reason: format!(
                "resource type {resource_type:?} or delivery type {delivery_type:?} is not a plain name"
            ),
        });
    }
    if crate::message::has_dot_segment(public_id) {
        return Err(CloudinaryError::Refused {
            reason: format!(
                "public_id {public_id:?} has a dot segment that would change the API path"
            ),
        });
    }
    Ok(format!(
        "resources/{resource_type}/{delivery_type}/{}",
        encode_public_id(public_id)
    ))
}

/// `Retry-After`, in seconds or as an HTTP date, as the time to try again.
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<SystemTime> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(now + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

/// When a refusal (HTTP 420 or 429) ends: `Retry-After` (the Upload API's 429) first, then the
/// reset it names (the Admin API's 420), else in a minute. A refusal while the quota's headers
/// still report calls left is not the hourly quota's (an add-on's monthly limit answered with
/// the Admin API's hourly figures, say): it lasts at least [`defaults::OTHER_LIMIT_WAIT`], so
/// that it is waited on a bounded number of times, never for ever.
///
/// [`defaults::OTHER_LIMIT_WAIT`]: crate::defaults::OTHER_LIMIT_WAIT
pub fn refusal_ends(
    retry_after: Option<SystemTime>,
    reset: Option<SystemTime>,
    quota: Option<&Quota>,
    now: SystemTime,
) -> SystemTime {
    let named = retry_after.or(reset);
    if quota.is_some_and(|q| q.remaining > 0) {
        let other = now + crate::defaults::OTHER_LIMIT_WAIT;
        return named.map_or(other, |t| t.max(other));
    }
    named.unwrap_or(now + Duration::from_secs(60))
}

/// Reads `X-FeatureRateLimit-Limit/-Remaining/-Reset`; `None` when absent (Upload API).
pub fn quota_from_headers(headers: &reqwest::header::HeaderMap) -> Option<Quota> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let limit = get("x-featureratelimit-limit")?.parse().ok()?;
    let remaining = get("x-featureratelimit-remaining")?.parse().ok()?;
    Some(Quota {
        limit,
        remaining,
        reset: quota_reset(headers),
    })
}

/// `X-FeatureRateLimit-Reset`: when the limit resets (also on a refusal that names nothing
/// else).
fn quota_reset(headers: &reqwest::header::HeaderMap) -> Option<SystemTime> {
    let value = headers.get("x-featureratelimit-reset")?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
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
        /// The quota the answer reported (the Admin API reports it on errors too).
        quota: Option<Quota>,
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
    /// Not sent: the request itself is unsafe or cannot be made.
    #[error("not sent to cloudinary: {reason}")]
    Refused { reason: String },
}

impl Classified for CloudinaryError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Status { status, .. } => match status {
                420 | 429 => ErrorClass::RateLimited,
                // Bad credentials, and a redirect (an API base that is not Cloudinary's), are
                // configuration faults: retried (and alarmed on), never dead-lettered at once,
                // so that fixing the secret or the address recovers every message.
                300..=399 | 401 | 403 | 408 => ErrorClass::Transient,
                s if *s >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            },
            Self::Transport { .. } | Self::Decode { .. } => ErrorClass::Transient,
            Self::Refused { .. } => ErrorClass::Permanent,
        }
    }

    fn retry_at(&self) -> Option<SystemTime> {
        match self {
            Self::Status { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    /// A redirect counts as refused credentials: the worker waits for the configuration to
    /// be fixed the same way, and the item's reason names the address.
    fn credentials_refused(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 300..=399 | 401,
                ..
            }
        )
    }

    fn quota(&self) -> Option<Quota> {
        match self {
            Self::Status { quota, .. } => *quota,
            _ => None,
        }
    }

    fn not_run(&self) -> bool {
        match self {
            // A redirect is a whole answer from whoever received the request: nothing that
            // bills followed it.
            Self::Status { status, .. } => (300..500).contains(status) && *status != 408,
            Self::Refused { .. } => true,
            // No connection, no request: Cloudinary cannot have run (or billed) anything. Any
            // other transport error may have come after the request arrived.
            Self::Transport { source, .. } => source.is_connect(),
            Self::Decode { .. } => false,
        }
    }
}

/// One asset as the Admin API and the Search API list it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct WireAsset {
    public_id: String,
    #[serde(default = "default_resource_type")]
    resource_type: String,
    #[serde(rename = "type", default = "default_delivery_type")]
    delivery_type: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

fn default_resource_type() -> String {
    "image".into()
}
fn default_delivery_type() -> String {
    "upload".into()
}

/// A page of a listing, as Cloudinary sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct WirePage {
    #[serde(default)]
    resources: Vec<WireAsset>,
    #[serde(default)]
    next_cursor: Option<String>,
    /// How many assets a search matches in all (the Search API's answers only).
    #[serde(default)]
    pub total_count: Option<u64>,
}

impl WirePage {
    /// The page in the lister's terms, with the quota its answer reported.
    pub fn into_page(self, quota: Option<Quota>) -> AssetPage {
        AssetPage {
            assets: self
                .resources
                .into_iter()
                .map(|a| ListedAsset {
                    public_id: a.public_id,
                    resource_type: a.resource_type,
                    delivery_type: a.delivery_type,
                    created_at: a.created_at,
                    version: a.version,
                    format: a.format,
                    tags: a.tags,
                })
                .collect(),
            next_cursor: self.next_cursor.filter(|c| !c.is_empty()),
            quota,
        }
    }
}

/// The search expression of an incremental pass: by upload time, so that an asset uploaded
/// again over an existing public_id (a new version) is listed as well as a new one. Every
/// delivery type is searched; the lister keeps the ones it OCRs.
pub fn incremental_expression(since: &str) -> String {
    format!("resource_type:image AND uploaded_at>=\"{since}\"")
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}
#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

/// Signs Upload API parameters (signature version 2, in SHA-1 or SHA-256 as the account
/// requires), as Cloudinary's SDKs do:
/// non-empty `k=v` pairs sorted by key, joined by `&` (with `&` in values written `%26`),
/// the API secret appended, hex-encoded.
pub fn sign_upload_params(
    params: &[(&str, &str)],
    api_secret: &Secret,
    algorithm: SignatureAlgorithm,
) -> String {
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
    let signed = format!("{to_sign}{}", api_secret.expose());
    let digest: Vec<u8> = match algorithm {
        SignatureAlgorithm::Sha1 => {
            <sha1::Sha1 as sha1::Digest>::digest(signed.as_bytes()).to_vec()
        }
        SignatureAlgorithm::Sha256 => {
            <sha2::Sha256 as sha2::Digest>::digest(signed.as_bytes()).to_vec()
        }
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
    signature_algorithm: SignatureAlgorithm,
    /// Why the credentials cannot be used: every call is answered as refused credentials.
    credentials_fault: Option<String>,
}

impl CloudinaryClient {
    /// The credentials the client signs with.
    pub fn credentials(&self) -> &CloudinaryCredentials {
        &self.credentials
    }

    pub fn new(config: &CloudinaryConfig) -> Result<Self, ClientBuildError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(50))
            // Cloudinary's API answers where it is asked. A redirect (a wrong API base, a
            // proxy) is reported, not followed: followed, a paid `explicit` could be sent twice
            // or its signed form sent to another host.
            .redirect(reqwest::redirect::Policy::none())
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
            signature_algorithm: config.signature_algorithm,
            credentials_fault: config.credentials_fault.clone(),
        })
    }

    /// Why the credentials cannot be used, when the client was built without usable ones.
    pub fn credentials_fault(&self) -> Option<&str> {
        self.credentials_fault.as_deref()
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
        if let Some(fault) = &self.credentials_fault {
            // Not sent: answered as Cloudinary would answer credentials it cannot accept.
            return Err(CloudinaryError::Status {
                what,
                status: 401,
                message: format!("the Cloudinary secret cannot be used: {fault}"),
                retry_at: None,
                quota: None,
            });
        }
        let started = std::time::Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|source| CloudinaryError::Transport {
                what: what.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        let quota = quota_from_headers(resp.headers());
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        // A refusal may name its reset without the rest of the quota's figures.
        let reset = quota_reset(resp.headers());
        let redirect = resp.status().is_redirection().then(|| {
            resp.headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map_or_else(String::new, |v| v.chars().take(200).collect())
        });
        let body = resp
            .bytes()
            .await
            .map_err(|source| CloudinaryError::Transport {
                what: what.clone(),
                source,
            })?;
        let latency = started.elapsed();
        if !(200..300).contains(&status) {
            let message = match redirect {
                Some(to) => {
                    format!("a redirect to {to:?}, not followed (check CLOUDINARY_API_BASE)")
                }
                None => serde_json::from_slice::<ErrorBody>(&body)
                    .map(|b| b.error.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(300).collect()),
            };
            let retry_at = matches!(status, 420 | 429)
                .then(|| refusal_ends(retry_after, reset, quota.as_ref(), SystemTime::now()));
            return Err(CloudinaryError::Status {
                what,
                status,
                message,
                retry_at,
                quota,
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

    /// One page of `GET resources/image/{delivery_type}` (Admin API), of the public_ids that
    /// start with `prefix` (all with an empty one).
    pub async fn list_page(
        &self,
        delivery_type: &str,
        prefix: &str,
        cursor: Option<&str>,
        max_results: u32,
    ) -> Result<Answer<WirePage>, CloudinaryError> {
        if !crate::message::DELIVERY_TYPES.contains(&delivery_type) {
            return Err(CloudinaryError::Refused {
                reason: format!("{delivery_type:?} is not a delivery type the lister lists"),
            });
        }
        let mut query = vec![("max_results", max_results.to_string())];
        if !prefix.is_empty() {
            query.push(("prefix", prefix.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("next_cursor", c.to_string()));
        }
        let req = self.admin(
            self.http
                .get(self.url(&format!("resources/image/{delivery_type}")))
                .query(&query),
        );
        self.send(format!("the listing of {delivery_type} images"), req)
            .await
    }

    /// One page of `GET resources/image/tags/{tag}` (Admin API): the images carrying the tag,
    /// of every delivery type.
    pub async fn tag_page(
        &self,
        tag: &str,
        cursor: Option<&str>,
        max_results: u32,
    ) -> Result<Answer<WirePage>, CloudinaryError> {
        let mut query = vec![("max_results", max_results.to_string())];
        if let Some(c) = cursor {
            query.push(("next_cursor", c.to_string()));
        }
        // A tag is one path segment: its slashes are encoded too.
        let path = format!(
            "resources/image/tags/{}",
            utf8_percent_encode(tag, TAG_SAFE)
        );
        let req = self.admin(self.http.get(self.url(&path)).query(&query));
        self.send(format!("the listing of images tagged {tag:?}"), req)
            .await
    }

    /// The account's usage (`GET usage`, Admin API): plan, storage, and each add-on's usage
    /// and limit this month.
    pub async fn usage(&self) -> Result<Answer<serde_json::Value>, CloudinaryError> {
        let req = self.admin(self.http.get(self.url("usage")));
        self.send("the account's usage".to_string(), req).await
    }

    /// One page of `POST resources/search` (Admin API), oldest first.
    pub async fn search_page(
        &self,
        expression: &str,
        cursor: Option<&str>,
        max_results: u32,
    ) -> Result<Answer<WirePage>, CloudinaryError> {
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

    /// Switches OCR on for an existing asset and returns the resource with `info.ocr`, read as
    /// `T` (the worker's [`ResourceAnswer`], or `serde_json::Value` for all of it).
    pub async fn request_ocr<T: serde::de::DeserializeOwned>(
        &self,
        public_id: &str,
        resource_type: &str,
        delivery_type: &str,
    ) -> Result<Answer<T>, CloudinaryError> {
        let what = format!("OCR of {public_id:?}");
        let req = match self.ocr_method {
            OcrMethod::AdminUpdate => self.admin(
                self.http
                    .post(self.url(&resource_path(resource_type, delivery_type, public_id)?))
                    .form(&[("ocr", "adv_ocr")]),
            ),
            OcrMethod::Explicit => {
                // The same checks as an Admin path's: the type names a path segment here.
                resource_path(resource_type, delivery_type, public_id)?;
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
                let signature = sign_upload_params(
                    &signed,
                    &self.credentials.api_secret,
                    self.signature_algorithm,
                );
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

    /// Reads the details of up to 100 resources of one type in one Admin API call
    /// (`GET resources/{resource_type}/{type}` with `public_ids[]`, as the SDKs' `resources_by_ids`
    /// sends it); no OCR is started or billed.
    pub async fn get_resources<T: serde::de::DeserializeOwned>(
        &self,
        public_ids: &[&str],
        resource_type: &str,
        delivery_type: &str,
    ) -> Result<Answer<T>, CloudinaryError> {
        for id in public_ids {
            resource_path(resource_type, delivery_type, id)?;
        }
        let mut query: Vec<(&str, &str)> =
            public_ids.iter().map(|id| ("public_ids[]", *id)).collect();
        let max = public_ids.len().to_string();
        query.push(("max_results", &max));
        let url = self.url(&format!(
            "resources/{}/{}",
            encode_public_id(resource_type),
            encode_public_id(delivery_type)
        ));
        self.send(
            format!("details of {} resources", public_ids.len()),
            self.admin(self.http.get(url).query(&query)),
        )
        .await
    }

    /// Reads a resource's details (no OCR is started, no OCR is billed), read as `T`.
    pub async fn get_resource<T: serde::de::DeserializeOwned>(
        &self,
        public_id: &str,
        resource_type: &str,
        delivery_type: &str,
    ) -> Result<Answer<T>, CloudinaryError> {
        let url = self.url(&resource_path(resource_type, delivery_type, public_id)?);
        self.send(
            format!("details of {public_id:?}"),
            self.admin(self.http.get(url)),
        )
        .await
    }
}

/// Resources read back together, each with its public_id.
#[derive(Debug, Deserialize)]
struct ResourcesAnswer {
    #[serde(default)]
    resources: Vec<NamedResource>,
}

#[derive(Debug, Deserialize)]
struct NamedResource {
    public_id: String,
    #[serde(flatten)]
    answer: ResourceAnswer,
}

/// A read-back's result from a resource's details: no OCR on it means none was requested.
fn read_back_result(resource: ResourceAnswer) -> Result<OcrResult, RemoteError> {
    if !resource.has_ocr() {
        return Ok(OcrResult {
            outcome: OcrOutcome::NotRequested,
            asset: resource.asset(),
            pages: 0,
        });
    }
    resource
        .result()
        .map_err(|e| RemoteError::new(ErrorClass::Permanent, crate::error::error_chain(&e)))
}

/// The worker's OCR port on Cloudinary: the answer parsed into the domain's result.
impl OcrService for CloudinaryClient {
    fn request_api(&self) -> crate::worker::Api {
        match self.ocr_method {
            OcrMethod::Explicit => crate::worker::Api::Upload,
            OcrMethod::AdminUpdate => crate::worker::Api::Admin,
        }
    }

    async fn request_ocr(&self, m: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        let answer = CloudinaryClient::request_ocr::<ResourceAnswer>(
            self,
            &m.public_id,
            &m.resource_type,
            &m.delivery_type,
        )
        .await
        .map_err(|e| RemoteError::from_classified(&e))?;
        ocr_answer(answer)
    }

    async fn fetch_result(&self, m: &WorkMessage) -> Result<OcrAnswer, RemoteError> {
        let answer = self
            .get_resource::<ResourceAnswer>(&m.public_id, &m.resource_type, &m.delivery_type)
            .await
            .map_err(|e| RemoteError::from_classified(&e))?;
        Ok(OcrAnswer {
            result: read_back_result(answer.value)?,
            quota: answer.quota,
            latency: answer.latency,
        })
    }

    async fn fetch_results(
        &self,
        messages: &[&WorkMessage],
    ) -> Option<Result<BulkAnswer, RemoteError>> {
        let first = messages.first()?;
        if messages.iter().any(|m| {
            m.resource_type != first.resource_type || m.delivery_type != first.delivery_type
        }) {
            return None;
        }
        let ids: Vec<&str> = messages.iter().map(|m| m.public_id.as_str()).collect();
        let answer = match self
            .get_resources::<ResourcesAnswer>(&ids, &first.resource_type, &first.delivery_type)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return Some(Err(RemoteError::from_classified(&e))),
        };
        let mut by_id: std::collections::HashMap<String, ResourceAnswer> = answer
            .value
            .resources
            .into_iter()
            .map(|r| (r.public_id, r.answer))
            .collect();
        // A resource whose OCR cannot be read is left out: read back alone, its own answer
        // fails it with the reason.
        let results = ids
            .iter()
            .map(|id| by_id.remove(*id).and_then(|r| read_back_result(r).ok()))
            .collect();
        Some(Ok(BulkAnswer {
            results,
            quota: answer.quota,
            latency: answer.latency,
        }))
    }
}

/// An answer without `info.ocr.adv_ocr` means the add-on did not run: asking again the same
/// way cannot help, so it is permanent.
fn ocr_answer(answer: Answer<ResourceAnswer>) -> Result<OcrAnswer, RemoteError> {
    let result = answer
        .value
        .result()
        .map_err(|e| RemoteError::new(ErrorClass::Permanent, crate::error::error_chain(&e)))?;
    Ok(OcrAnswer {
        result,
        quota: answer.quota,
        latency: answer.latency,
    })
}

/// The lister's asset source on Cloudinary: the Admin API listing of each delivery type for a
/// full pass, the Search API for an incremental one.
impl AssetSource for CloudinaryClient {
    async fn page(
        &self,
        listing: &Listing,
        cursor: Option<&str>,
        page_size: u32,
    ) -> Result<AssetPage, RemoteError> {
        let answer = match listing {
            Listing::Type {
                delivery_type,
                prefix,
            } => {
                self.list_page(delivery_type, prefix, cursor, page_size)
                    .await
            }
            Listing::Tag(tag) => self.tag_page(tag, cursor, page_size).await,
            Listing::Search(expression) => self.search_page(expression, cursor, page_size).await,
            Listing::CreatedSince(since) => {
                self.search_page(&incremental_expression(since), cursor, page_size)
                    .await
            }
        }
        .map_err(|e| RemoteError::from_classified(&e))?;
        Ok(answer.value.into_page(answer.quota))
    }

    async fn addon_usage(&self) -> Result<Option<AddonUsage>, RemoteError> {
        let answer = self
            .usage()
            .await
            .map_err(|e| RemoteError::from_classified(&e))?;
        Ok(addon_usage(&answer.value))
    }
}

/// The OCR add-on's usage and limit in a `usage` answer (`adv_ocr: {usage, limit}`); `None`
/// when the answer has no limit for it (the add-on not enabled, say).
pub fn addon_usage(usage: &serde_json::Value) -> Option<AddonUsage> {
    let ocr = usage.get("adv_ocr")?;
    let number = |v: &serde_json::Value| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64));
    Some(AddonUsage {
        usage: ocr.get("usage").and_then(number).unwrap_or(0),
        limit: ocr.get("limit").and_then(number)?,
    })
}

#[cfg(test)]
mod tests {

    /// A redirect is reported, never followed: the paid request is not sent again, nor its
    /// signed form to another host. It is a configuration fault (an API base that is not
    /// Cloudinary's): waited on as refused credentials are, never dead-lettered, and nothing
    /// ran that bills.
    #[tokio::test]
    async fn a_redirect_is_reported_not_followed() {
        use super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere_at = format!(
            "http://{}/v1_1/demo/image/explicit",
            elsewhere.local_addr().unwrap()
        );
        let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_base = format!("http://{}", redirector.local_addr().unwrap());
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = reached.clone();
        tokio::spawn(async move {
            while let Ok((_, _)) = elsewhere.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let location = elsewhere_at.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = redirector.accept().await {
                let mut request = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        for ocr_method in [OcrMethod::Explicit, OcrMethod::AdminUpdate] {
            let client = CloudinaryClient::new(&CloudinaryConfig {
                credentials: CloudinaryCredentials {
                    api_key: "key".into(),
                    api_secret: Secret::new("test-secret"),
                    cloud_name: "demo".into(),
                },
                api_base: api_base.clone(),
                timeout: Duration::from_secs(5),
                ocr_method,
                signature_algorithm: SignatureAlgorithm::Sha1,
                credentials_fault: None,
            })
            .unwrap();
            let err = client
                .request_ocr::<serde_json::Value>("a", "image", "upload")
                .await
                .unwrap_err();
            assert!(
                matches!(err, CloudinaryError::Status { status: 307, .. }),
                "{ocr_method:?}: {err:?}"
            );
            assert!(err.to_string().contains(&elsewhere_at), "{err}");
            assert_eq!(err.class(), ErrorClass::Transient);
            assert!(
                err.credentials_refused(),
                "waited on as a configuration fault"
            );
            assert!(err.not_run(), "a redirect ran nothing that bills");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            reached.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "followed"
        );
    }

    /// A request that never found a connection ran nothing: it is not read back before it is
    /// asked again.
    #[tokio::test]
    async fn a_connection_never_made_ran_nothing() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let source = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1_1/demo/image/explicit"))
            .send()
            .await
            .unwrap_err();
        assert!(source.is_connect(), "{source}");
        let err = CloudinaryError::Transport {
            what: "explicit".into(),
            source,
        };
        assert!(err.not_run());
        assert_eq!(err.class(), ErrorClass::Transient);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert("retry-after", "120".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(now + Duration::from_secs(120)));
        let at = now + Duration::from_secs(3600);
        h.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(at));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn no_public_id_or_type_changes_the_api_path() {
        assert_eq!(
            resource_path("image", "private", "folder/a b/ü.png").unwrap(),
            "resources/image/private/folder/a%20b/%C3%BC.png"
        );
        assert!(resource_path("image", "upload", "a/..b/...").is_ok());
        for (rt, dt, id) in [
            ("image", "upload", "a/../../../../resources/image/upload/x"),
            ("image", "upload", "./x"),
            ("image", "upload", "a/%2e%2E"),
            ("image", "../upload", "x"),
            ("image/x", "upload", "x"),
            ("", "upload", "x"),
        ] {
            let err = resource_path(rt, dt, id).unwrap_err();
            assert_eq!(err.class(), ErrorClass::Permanent, "{rt} {dt} {id}");
            assert!(err.to_string().starts_with("not sent"), "{err}");
        }
    }

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
        let sample = [
            ("timestamp", "1315060510"),
            ("public_id", "sample"),
            ("type", "upload"),
            ("ocr", "adv_ocr"),
        ];
        // The same in SHA-256, for an account that requires it.
        for (algorithm, expected) in [
            (
                SignatureAlgorithm::Sha1,
                "bfca2622883f0e4a83a72916edf56cb50842f1a1",
            ),
            (
                SignatureAlgorithm::Sha256,
                "30260047d2903eac621feaa4469280747aeeeb796df98480970dbaf451fb2045",
            ),
        ] {
            assert_eq!(sign_upload_params(&sample, &secret, algorithm), expected);
        }
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
                &secret,
                SignatureAlgorithm::Sha1
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
            quota: None,
        };
        assert_eq!(e.class(), ErrorClass::RateLimited);
        let e = CloudinaryError::Status {
            what: "x".into(),
            status: 404,
            message: "nf".into(),
            retry_at: None,
            quota: None,
        };
        assert_eq!(e.class(), ErrorClass::Permanent);
        let e = CloudinaryError::Status {
            what: "x".into(),
            status: 503,
            message: "busy".into(),
            retry_at: None,
            quota: None,
        };
        assert_eq!(e.class(), ErrorClass::Transient);
    }

    #[test]
    fn a_refusal_ends_when_it_says_or_is_taken_for_a_longer_limit_when_the_quota_has_calls_left() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let hour = now + Duration::from_secs(1800);
        let month = now + Duration::from_secs(30 * 86_400);
        let quota = |remaining| Quota {
            limit: 500,
            remaining,
            reset: Some(hour),
        };
        let day = now + crate::defaults::OTHER_LIMIT_WAIT;
        let cases = [
            // The hourly quota spent: its reset.
            (None, Some(hour), Some(quota(0)), hour),
            // `Retry-After` first.
            (
                Some(now + Duration::from_secs(5)),
                Some(hour),
                None,
                now + Duration::from_secs(5),
            ),
            // A monthly limit naming its reset.
            (None, Some(month), Some(quota(0)), month),
            (None, Some(month), Some(quota(7)), month),
            // A refusal the hourly quota cannot explain: calls left, the hour's reset named.
            (None, Some(hour), Some(quota(7)), day),
            (None, None, Some(quota(7)), day),
            // Nothing named: a minute.
            (None, None, None, now + Duration::from_secs(60)),
        ];
        for (retry_after, reset, quota, expected) in cases {
            assert_eq!(
                refusal_ends(retry_after, reset, quota.as_ref(), now),
                expected,
                "{retry_after:?} {reset:?} {quota:?}"
            );
        }
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
        let q = quota_from_headers(&h).unwrap();
        assert_eq!((q.limit, q.remaining), (500, 12));
        assert_eq!(
            q.reset.unwrap(),
            httpdate::parse_http_date("Wed, 25 Nov 2026 04:00:00 GMT").unwrap()
        );
        assert!(quota_from_headers(&reqwest::header::HeaderMap::new()).is_none());
    }
}

//! A client of the Upload API's `upload`, `rename` and `destroy`, signing as Cloudinary's SDKs
//! do, for tests and demos that change an emulated account over HTTP.

use base64::Engine;
use serde_json::Value;

/// A refused or failed Upload API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadError {
    /// Answered with an HTTP error and Cloudinary's message.
    Api { status: u16, message: String },
    /// No usable answer: the connection failed or the body is not JSON.
    Http(String),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Api { status, message } => write!(f, "HTTP {status}: {message}"),
            UploadError::Http(e) => write!(f, "no answer: {e}"),
        }
    }
}

impl std::error::Error for UploadError {}

impl UploadError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            UploadError::Api { status, .. } => Some(*status),
            UploadError::Http(_) => None,
        }
    }
}

/// Signed Upload API calls to one account, as Cloudinary's SDKs sign them (signature version
/// 2, SHA-1 unless told SHA-256), sent form-encoded.
#[derive(Debug, Clone)]
pub struct UploadClient {
    http: reqwest::Client,
    base_url: String,
    cloud_name: String,
    api_key: String,
    api_secret: String,
    sha256: bool,
    notification_url: Option<String>,
}

impl UploadClient {
    /// A client of the account `cloud_name` at `base_url` (the emulator's, or Cloudinary's
    /// `https://api.cloudinary.com`).
    pub fn new(
        base_url: impl Into<String>,
        cloud_name: &str,
        api_key: &str,
        api_secret: &str,
    ) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.into().trim_end_matches('/').to_string(),
            cloud_name: cloud_name.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            sha256: false,
            notification_url: None,
        }
    }

    /// Signs in SHA-256 (else SHA-1).
    pub fn sha256(mut self, sha256: bool) -> Self {
        self.sha256 = sha256;
        self
    }

    /// Sends `notification_url` with every call.
    pub fn notification_url(mut self, url: Option<String>) -> Self {
        self.notification_url = url;
        self
    }

    /// The signature of `params` as the SDKs compute it: the parameters that are signed
    /// (non-empty, not `file`, `api_key`, `resource_type`, `cloud_name` or `signature`), each
    /// `key=value` with `&` escaped, sorted, joined by `&`, then the secret; hex SHA-1 or
    /// SHA-256.
    pub fn sign(&self, params: &[(String, String)]) -> String {
        use sha2::Digest;
        const UNSIGNED: &[&str] = &[
            "file",
            "api_key",
            "resource_type",
            "cloud_name",
            "signature",
        ];
        let mut pairs: Vec<String> = params
            .iter()
            .filter(|(k, v)| !v.is_empty() && !UNSIGNED.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}").replace('&', "%26"))
            .collect();
        pairs.sort();
        let signed = format!("{}{}", pairs.join("&"), self.api_secret);
        let digest = if self.sha256 {
            sha2::Sha256::digest(signed.as_bytes()).to_vec()
        } else {
            sha1::Sha1::digest(signed.as_bytes()).to_vec()
        };
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Calls `image/{action}` with `params`, adding `timestamp`, `notification_url` (when
    /// set), `signature` and `api_key`; the answer's JSON.
    pub async fn call(
        &self,
        action: &str,
        mut params: Vec<(String, String)>,
    ) -> Result<Value, UploadError> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        params.push(("timestamp".into(), timestamp.to_string()));
        if let Some(url) = &self.notification_url {
            params.push(("notification_url".into(), url.clone()));
        }
        params.retain(|(_, v)| !v.is_empty());
        let signature = self.sign(&params);
        params.push(("signature".into(), signature));
        params.push(("api_key".into(), self.api_key.clone()));
        let url = format!("{}/v1_1/{}/image/{action}", self.base_url, self.cloud_name);
        let answer = self
            .http
            .post(url)
            .form(&params)
            .send()
            .await
            .map_err(|e| UploadError::Http(e.to_string()))?;
        let status = answer.status().as_u16();
        let body: Value = answer
            .json()
            .await
            .map_err(|e| UploadError::Http(e.to_string()))?;
        if let Some(message) = body
            .get("error")
            .map(|e| e["message"].as_str().unwrap_or_default())
        {
            return Err(UploadError::Api {
                status,
                message: message.to_string(),
            });
        }
        Ok(body)
    }

    /// Uploads an image whose OCR reads `text` (sent as a data URI) as `(delivery_type,
    /// public_id)`, a random public_id when `None`; over an existing asset only if
    /// `overwrite`.
    pub async fn upload(
        &self,
        public_id: Option<&str>,
        text: &[u8],
        delivery_type: &str,
        overwrite: bool,
    ) -> Result<Value, UploadError> {
        let data = base64::engine::general_purpose::STANDARD.encode(text);
        let params = vec![
            ("file".into(), format!("data:image/png;base64,{data}")),
            (
                "public_id".into(),
                public_id.unwrap_or_default().to_string(),
            ),
            ("type".into(), delivery_type.to_string()),
            ("overwrite".into(), if overwrite { "1" } else { "0" }.into()),
        ];
        self.call("upload", params).await
    }

    /// Renames `(delivery_type, from)` to `to`, replacing an asset there only if `overwrite`.
    pub async fn rename(
        &self,
        from: &str,
        to: &str,
        delivery_type: &str,
        overwrite: bool,
    ) -> Result<Value, UploadError> {
        let params = vec![
            ("from_public_id".into(), from.to_string()),
            ("to_public_id".into(), to.to_string()),
            ("type".into(), delivery_type.to_string()),
            ("overwrite".into(), if overwrite { "1" } else { "0" }.into()),
        ];
        self.call("rename", params).await
    }

    /// Destroys `(delivery_type, public_id)`: `{"result": "ok"}` or `{"result": "not found"}`.
    pub async fn destroy(
        &self,
        public_id: &str,
        delivery_type: &str,
    ) -> Result<Value, UploadError> {
        let params = vec![
            ("public_id".into(), public_id.to_string()),
            ("type".into(), delivery_type.to_string()),
        ];
        self.call("destroy", params).await
    }
}

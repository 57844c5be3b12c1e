//! What the unit tests of the Upload API's changes and of notifications share: an emulator
//! over HTTP, Admin API calls with its credentials, and a receiver of notifications.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::{Emulator, EmulatorConfig};

/// An emulator with `assets` and the configuration `change` makes.
pub(crate) async fn emulator(
    assets: Vec<crate::Asset>,
    change: impl FnOnce(&mut EmulatorConfig),
) -> Emulator {
    let mut config = EmulatorConfig::new("demo");
    change(&mut config);
    Emulator::start(config, assets, 0).await.unwrap()
}

/// An Admin API call with the emulator's credentials: status, headers, body.
pub(crate) async fn admin(
    emu: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let c = emu.config();
    let url = format!("{}/v1_1/{}/{path}", emu.base_url(), c.cloud_name);
    let mut request = reqwest::Client::new()
        .request(method, url)
        .basic_auth(&c.api_key, Some(&c.api_secret));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let headers = answer.headers().clone();
    let body = answer.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// The OCR of the `upload` asset `public_id` through the Admin API: its first page's text.
pub(crate) async fn ocr_text(emu: &Emulator, public_id: &str) -> Option<String> {
    let path = format!(
        "resources/image/upload/{}",
        percent_encoding::utf8_percent_encode(public_id, percent_encoding::NON_ALPHANUMERIC)
    );
    let body = serde_json::json!({"ocr": "adv_ocr"});
    let (status, _, answer) = admin(emu, reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["info"]["ocr"]["adv_ocr"]["data"][0]["fullTextAnnotation"]["text"]
        .as_str()
        .map(str::to_string)
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A notification endpoint on 127.0.0.1 that records every request and answers the given
/// statuses in turn, then 200.
pub(crate) struct Receiver {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub(crate) async fn start(answers: &[u16]) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers.iter().copied().collect::<VecDeque<_>>()));
        let (log, script) = (received.clone(), answers.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (log, script) = (log.clone(), script.clone());
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                log.lock().unwrap().push(Received {
                    timestamp: header("x-cld-timestamp"),
                    signature: header("x-cld-signature"),
                    content_type: header("content-type"),
                    body,
                    at: Instant::now(),
                });
                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, received }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

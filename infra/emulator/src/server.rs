//! HTTP routing and the answers, shaped like Cloudinary's (see shared/tests/fixtures/cloudinary).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};

use crate::{Asset, AssetId, EmulatorConfig, State};

/// The delivery types whose assets the account stores (and the emulator holds).
const STORED_TYPES: [&str; 3] = ["upload", "private", "authenticated"];

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

type Reply = Response;

fn error(status: u16, message: &str) -> Reply {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({"error": {"message": message}}))).into_response()
}

fn ok(body: Value) -> Reply {
    axum::Json(body).into_response()
}

fn decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    // application/x-www-form-urlencoded: `+` is a space, then percent-decoding.
    std::str::from_utf8(body)
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(&k.replace('+', " "))?, decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// A request body's parameters, however Cloudinary's clients send them: JSON (the Admin API
/// from the SDKs), `multipart/form-data` (the Upload API from the SDKs) or form-encoded.
async fn body_params(headers: &HeaderMap, body: Bytes) -> Result<Vec<(String, String)>, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let object = value.as_object().ok_or("the JSON body is not an object")?;
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        return Ok(object
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect());
    }
    if content_type.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&content_type).map_err(|e| e.to_string())?;
        let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut params = Vec::new();
        while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_string();
            let value = field.text().await.map_err(|e| e.to_string())?;
            params.push((name, value));
        }
        return Ok(params);
    }
    Ok(form(&body))
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query().map(|q| form(q.as_bytes())).unwrap_or_default()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn authorized(headers: &HeaderMap, cfg: &EmulatorConfig) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{}:{}", cfg.api_key, cfg.api_secret).as_bytes()
}

/// Whether `given` signs `params`: signature version 2 exactly as Cloudinary checks it
/// (independent of the client's code), in SHA-1 (40 hex digits) or SHA-256 (64), unless the
/// account requires SHA-256.
fn signature_matches(
    params: &[(String, String)],
    secret: &str,
    given: &str,
    require_sha256: bool,
) -> bool {
    use sha2::Digest;
    let signed = string_to_sign(params, secret);
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match given.len() {
        40 if !require_sha256 => hex(&sha1::Sha1::digest(signed.as_bytes())) == given,
        64 => hex(&sha2::Sha256::digest(signed.as_bytes())) == given,
        _ => false,
    }
}

/// The string a signature signs: the signed parameters sorted, `&` in values escaped, then
/// the secret.
fn string_to_sign(params: &[(String, String)], secret: &str) -> String {
    const UNSIGNED: &[&str] = &[
        "api_key",
        "signature",
        "signature_algorithm",
        "file",
        "resource_type",
        "cloud_name",
    ];
    let mut signed: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !UNSIGNED.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    signed.sort();
    let joined: Vec<String> = signed
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('&', "%26")))
        .collect();
    format!("{}{secret}", joined.join("&"))
}

/// Now, the quota windows' length and when the current one opened, in ms since the epoch:
/// windows are aligned to the clock, as Cloudinary's hourly ones are to the hour.
fn window_now(cfg: &EmulatorConfig) -> (u64, u64, u64) {
    let window_ms = (cfg.admin_window.as_millis() as u64).max(1);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    (now_ms, window_ms, now_ms - now_ms % window_ms)
}

/// Counts an Admin API call against the window; `Err` is the 420 answer.
fn admin_quota(state: &State, cfg: &EmulatorConfig) -> Result<HeaderMap, Box<Reply>> {
    let mut inner = state.lock();
    let (_, window_ms, opened_ms) = window_now(cfg);
    if opened_ms != inner.window.opened_ms {
        if inner.window.used > 0 {
            let ended = crate::WindowUse {
                opened_ms: inner.window.opened_ms,
                used: inner.window.used,
            };
            inner.stats.windows.push(ended);
        }
        inner.window = crate::Window { opened_ms, used: 0 };
    }
    let reset = UNIX_EPOCH + Duration::from_millis(opened_ms + window_ms);
    inner.stats.admin_calls += 1;
    let refused = inner.window.used >= cfg.admin_limit;
    if !refused {
        inner.window.used += 1;
        inner.stats.peak_admin_in_window = inner.stats.peak_admin_in_window.max(inner.window.used);
    } else {
        inner.stats.rate_limited += 1;
    }
    let mut h = HeaderMap::new();
    let num = |n: u64| HeaderValue::from_str(&n.to_string()).expect("digits");
    h.insert("X-FeatureRateLimit-Limit", num(cfg.admin_limit));
    h.insert(
        "X-FeatureRateLimit-Remaining",
        num(cfg.admin_limit.saturating_sub(inner.window.used)),
    );
    h.insert(
        "X-FeatureRateLimit-Reset",
        HeaderValue::from_str(&httpdate::fmt_http_date(reset)).expect("http date"),
    );
    if refused {
        let mut r = error(420, "Rate Limit Exceeded");
        r.headers_mut().extend(h);
        return Err(Box::new(r));
    }
    Ok(h)
}

fn with_headers(mut reply: Reply, headers: HeaderMap) -> Reply {
    reply.headers_mut().extend(headers);
    reply
}

fn resource_json(asset: &Asset, cloud: &str, ocr: Option<&str>) -> Value {
    let version = 1_600_000_000u64 + asset.version;
    let path =
        percent_encoding::utf8_percent_encode(&asset.public_id, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut v = json!({
        "asset_id": format!("{:032x}", fxhash(&format!("{}/{}", asset.delivery_type, asset.public_id))),
        "public_id": asset.public_id,
        "format": asset.format,
        "version": version,
        "resource_type": "image",
        "type": asset.delivery_type,
        "created_at": asset.created_at,
        "bytes": asset.bytes,
        "width": asset.width,
        "height": asset.height,
        "url": format!("http://res.cloudinary.com/{cloud}/image/{}/v{version}/{path}.{}", asset.delivery_type, asset.format),
        "secure_url": format!("https://res.cloudinary.com/{cloud}/image/{}/v{version}/{path}.{}", asset.delivery_type, asset.format),
    });
    if let Some(status) = ocr {
        let adv = match (status, &asset.text) {
            // A document's pages are its text's parts between form feeds: one `data` entry
            // each, as Cloudinary answers for a multi-page PDF or TIFF.
            ("complete", Some(text)) => {
                let pages: Vec<Value> = text
                    .split('\u{c}')
                    .map(|page| page_json(asset, page))
                    .collect();
                json!({"status": "complete", "data": pages})
            }
            ("complete", None) => json!({"status": "complete", "data": [{}]}),
            // A failed OCR's `data` is Cloudinary's message.
            ("failed", _) => {
                json!({"status": "failed", "data": "Image could not be read by the OCR engine"})
            }
            (other, _) => json!({"status": other}),
        };
        v["info"] = json!({"ocr": {"adv_ocr": adv}});
    }
    v
}

/// One page's OCR answer: the page's whole text first, then its words.
fn page_json(asset: &Asset, text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    let mut annotations = vec![json!({
        "locale": asset.locale.clone().unwrap_or_else(|| "en".into()),
        "description": text,
        "boundingPoly": {"vertices": [{"x": 0, "y": 0}, {"x": asset.width, "y": 0}, {"x": asset.width, "y": asset.height}, {"x": 0, "y": asset.height}]}
    })];
    annotations.extend(text.split_whitespace().take(50).enumerate().map(|(i, w)| {
        let x = (i as u64 * 40) % asset.width.max(1);
        json!({"description": w, "boundingPoly": {"vertices": [{"x": x, "y": 10}, {"x": x + 30, "y": 10}, {"x": x + 30, "y": 40}, {"x": x, "y": 40}]}})
    }));
    json!({"textAnnotations": annotations, "fullTextAnnotation": {"text": text}})
}

fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf29ce484222325u128, |h, b| {
        (h ^ b as u128).wrapping_mul(0x100000001b3)
    })
}

fn listing(
    assets: Vec<&Asset>,
    params_cursor: Option<&str>,
    max_results: usize,
    cloud: &str,
    search: bool,
) -> Value {
    // The cursor is "c" and a hex offset (whose digits may be c's too: strip one prefix).
    let start = params_cursor
        .and_then(|c| usize::from_str_radix(c.strip_prefix('c').unwrap_or(c), 16).ok())
        .unwrap_or(0);
    let end = (start + max_results).min(assets.len());
    let page: Vec<Value> = assets[start.min(end)..end]
        .iter()
        .map(|a| {
            let mut v = resource_json(a, cloud, None);
            if search {
                v["uploaded_at"] = a.uploaded_at.as_deref().unwrap_or(&a.created_at).into();
                v["status"] = "active".into();
            }
            v
        })
        .collect();
    let mut body = json!({"resources": page});
    if search {
        body["total_count"] = assets.len().into();
        body["time"] = 12.into();
    }
    if end < assets.len() {
        body["next_cursor"] = format!("c{end:x}").into();
    }
    body
}

/// One term of a search expression, as a predicate on assets. An expression is terms joined
/// by AND: resource_type, type (the delivery type) and created_at/uploaded_at comparisons.
type Filter = Box<dyn Fn(&Asset) -> bool + Send>;

fn search_filter(expression: &str) -> Result<Vec<Filter>, String> {
    let mut filters: Vec<Filter> = Vec::new();
    for term in expression
        .split(" AND ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if let Some(v) = term.strip_prefix("resource_type:") {
            let ok = v.trim_matches('"') == "image";
            filters.push(Box::new(move |_| ok));
        } else if let Some(v) = term.strip_prefix("type:") {
            let wanted = v.trim_matches('"').to_string();
            filters.push(Box::new(move |a: &Asset| a.delivery_type == wanted));
        } else if let Some((uploaded, rest)) = term
            .strip_prefix("created_at")
            .map(|r| (false, r))
            .or_else(|| term.strip_prefix("uploaded_at").map(|r| (true, r)))
        {
            let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
                (">=", v)
            } else if let Some(v) = rest.strip_prefix('>') {
                (">", v)
            } else if let Some(v) = rest.strip_prefix("<=") {
                ("<=", v)
            } else if let Some(v) = rest.strip_prefix('<') {
                ("<", v)
            } else {
                return Err(format!("unsupported date term {term:?}"));
            };
            let when = time::OffsetDateTime::parse(
                value.trim_matches('"'),
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|e| format!("bad date in {term:?}: {e}"))?;
            let op = op.to_string();
            filters.push(Box::new(move |a: &Asset| {
                let field = match (&a.uploaded_at, uploaded) {
                    (Some(u), true) => u,
                    _ => &a.created_at,
                };
                let Ok(at) = time::OffsetDateTime::parse(
                    field,
                    &time::format_description::well_known::Rfc3339,
                ) else {
                    return false;
                };
                match op.as_str() {
                    ">=" => at >= when,
                    ">" => at > when,
                    "<=" => at <= when,
                    _ => at < when,
                }
            }));
        } else {
            return Err(format!("unsupported search term {term:?}"));
        }
    }
    Ok(filters)
}

async fn dispatch(
    AxState(state): AxState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    let cfg = state.config();
    let raw_path = uri.path();
    // The emulator's own endpoint answers at once: only the emulated API is slowed down.
    if raw_path == "/_emulator/stats" {
        return ok(serde_json::to_value(state.lock().stats.clone()).unwrap_or_default());
    }
    if !cfg.latency.is_zero() {
        tokio::time::sleep(cfg.latency).await;
    }
    let prefix = format!("/v1_1/{}/", cfg.cloud_name);
    let Some(rest) = raw_path.strip_prefix(&prefix) else {
        return error(404, &format!("unknown cloud or path {raw_path:?}"));
    };

    // Upload API: signed, not counted against the Admin quota.
    if rest == "image/explicit" && method == Method::POST {
        let params = match body_params(&headers, body).await {
            Ok(p) => p,
            Err(e) => return error(400, &e),
        };
        return explicit(&state, &cfg, &params).await;
    }

    if !authorized(&headers, &cfg) {
        state.lock().stats.unauthorized += 1;
        return error(401, "Invalid credentials");
    }

    if rest == "resources/search" && method == Method::POST {
        let quota = match admin_quota(&state, &cfg) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        let req: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return with_headers(error(400, &format!("search body is not JSON: {e}")), quota);
            }
        };
        let expression = req.get("expression").and_then(Value::as_str).unwrap_or("");
        let max_results = req
            .get("max_results")
            .and_then(Value::as_u64)
            .unwrap_or(50)
            .clamp(1, 500) as usize;
        let cursor = req.get("next_cursor").and_then(Value::as_str);
        let filters = match search_filter(expression) {
            Ok(f) => f,
            Err(e) => return with_headers(error(400, &e), quota),
        };
        let mut inner = state.lock();
        inner.stats.search_calls += 1;
        let indexed = |a: &Asset| {
            inner
                .uploaded
                .get(&a.id())
                .is_none_or(|at| at.elapsed() >= cfg.index_lag)
        };
        let mut matched: Vec<&Asset> = inner
            .assets
            .iter()
            .filter(|a| indexed(a) && filters.iter().all(|f| f(a)))
            .collect();
        matched.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.public_id.cmp(&b.public_id))
        });
        let body = listing(matched, cursor, max_results, &cfg.cloud_name, true);
        return with_headers(ok(body), quota);
    }

    // Every delivery type, or one. (What Cloudinary lists without a type is not relied on:
    // the lister names each type it lists.)
    let listed_type = match rest.strip_prefix("resources/image") {
        Some("") => Some(None),
        Some(t) if STORED_TYPES.iter().any(|s| t.strip_prefix('/') == Some(*s)) => {
            Some(Some(&t[1..]))
        }
        _ => None,
    };
    if let Some(listed_type) = listed_type
        && method == Method::GET
    {
        let quota = match admin_quota(&state, &cfg) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        let q = query(&uri);
        let max_results = param(&q, "max_results")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10usize)
            .clamp(1, 500);
        let mut inner = state.lock();
        inner.stats.list_calls += 1;
        let assets: Vec<&Asset> = inner
            .assets
            .iter()
            .filter(|a| listed_type.is_none_or(|t| a.delivery_type == t))
            .collect();
        let body = listing(
            assets,
            param(&q, "next_cursor"),
            max_results,
            &cfg.cloud_name,
            false,
        );
        return with_headers(ok(body), quota);
    }

    if let Some((delivery_type, encoded_id)) = rest
        .strip_prefix("resources/image/")
        .and_then(|r| r.split_once('/'))
    {
        let Some(public_id) = decode(encoded_id) else {
            return error(400, "public_id is not valid UTF-8 percent-encoding");
        };
        let id: AssetId = (delivery_type.to_string(), public_id);
        let quota = match admin_quota(&state, &cfg) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        let reply = if method == Method::POST {
            let params = match body_params(&headers, body).await {
                Ok(p) => p,
                Err(e) => return with_headers(error(400, &e), quota),
            };
            match param(&params, "ocr") {
                Some("adv_ocr") => ocr(&state, &cfg, &id).await,
                Some(other) => error(400, &format!("Invalid ocr parameter {other}")),
                None => details(&state, &cfg, &id),
            }
        } else if method == Method::GET {
            details(&state, &cfg, &id)
        } else {
            error(405, "method not allowed")
        };
        return with_headers(reply, quota);
    }
    error(404, &format!("no such endpoint {method} {raw_path}"))
}

fn details(state: &State, cfg: &EmulatorConfig, id: &AssetId) -> Reply {
    let mut inner = state.lock();
    inner.stats.details_calls += 1;
    let Some(&i) = inner.index.get(id) else {
        return error(404, &format!("Resource not found - {}", id.1));
    };
    let done = inner.ocr_done.contains(id);
    let status = if cfg.ocr_fails.contains(&id.1) {
        "failed"
    } else {
        "complete"
    };
    ok(resource_json(
        &inner.assets[i],
        &cfg.cloud_name,
        done.then_some(status),
    ))
}

async fn explicit(state: &State, cfg: &EmulatorConfig, params: &[(String, String)]) -> Reply {
    let params = params.to_vec();
    state.lock().stats.explicit_calls += 1;
    if let Err(refused) = upload_quota(state, cfg) {
        return *refused;
    }
    if param(&params, "api_key") != Some(cfg.api_key.as_str()) {
        state.lock().stats.unauthorized += 1;
        return error(401, "Invalid api_key");
    }
    let given = param(&params, "signature").unwrap_or_default();
    if !signature_matches(&params, &cfg.api_secret, given, cfg.require_sha256) {
        state.lock().stats.unauthorized += 1;
        return error(401, "Invalid Signature. String to sign does not match");
    }
    let fresh = param(&params, "timestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|t| {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            t + 3600 >= now && t <= now + 3600
        });
    if !fresh {
        return error(
            400,
            "Stale request - reported time is more than 1 hour from the current time",
        );
    }
    let Some(public_id) = param(&params, "public_id") else {
        return error(400, "Missing required parameter - public_id");
    };
    let id: AssetId = (
        param(&params, "type").unwrap_or("upload").to_string(),
        public_id.to_string(),
    );
    match param(&params, "ocr") {
        Some("adv_ocr") => ocr(state, cfg, &id).await,
        Some(other) => error(400, &format!("Invalid ocr parameter {other}")),
        None => details(state, cfg, &id),
    }
}

/// Counts an Upload API call against the window; `Err` is the 429 answer with `Retry-After`.
fn upload_quota(state: &State, cfg: &EmulatorConfig) -> Result<(), Box<Reply>> {
    if cfg.upload_limit == u64::MAX {
        return Ok(());
    }
    let (now_ms, window_ms, opened_ms) = window_now(cfg);
    let mut inner = state.lock();
    if inner.upload_window.opened_ms != opened_ms {
        inner.upload_window = crate::Window { opened_ms, used: 0 };
    }
    if inner.upload_window.used >= cfg.upload_limit {
        inner.stats.rate_limited += 1;
        let wait = (opened_ms + window_ms - now_ms).div_ceil(1000).max(1);
        let mut r = error(429, "Too many concurrent requests");
        r.headers_mut().insert(
            "Retry-After",
            HeaderValue::from_str(&wait.to_string()).expect("digits"),
        );
        return Err(Box::new(r));
    }
    inner.upload_window.used += 1;
    Ok(())
}

/// The add-on's monthly limit: HTTP 420 with Cloudinary's message and a reset a month away.
fn monthly_limit() -> Reply {
    let reset = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
    let mut r = error(420, "Monthly limit of adv_ocr add-on usage reached");
    r.headers_mut()
        .insert("X-FeatureRateLimit-Limit", HeaderValue::from_static("1000"));
    r.headers_mut().insert(
        "X-FeatureRateLimit-Remaining",
        HeaderValue::from_static("0"),
    );
    r.headers_mut().insert(
        "X-FeatureRateLimit-Reset",
        HeaderValue::from_str(&httpdate::fmt_http_date(reset)).expect("http date"),
    );
    r
}

async fn ocr(state: &State, cfg: &EmulatorConfig, id: &AssetId) -> Reply {
    let public_id = id.1.as_str();
    if cfg.monthly_limit_reached {
        state.lock().stats.rate_limited += 1;
        return monthly_limit();
    }
    {
        let mut inner = state.lock();
        inner.stats.ocr_requests += 1;
        *inner.ocr_requests.entry(id.clone()).or_default() += 1;
    }
    if let Some(&status) = cfg.forced_status.get(public_id) {
        state.lock().stats.injected_errors += 1;
        return error(status, "Injected failure");
    }
    let (fail, hang, drop, pending) = {
        let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
        let roll: f64 = rng.random();
        let hang_from = cfg.error_rate;
        let drop_from = hang_from + cfg.timeout_rate;
        (
            roll < hang_from,
            roll >= hang_from && roll < drop_from,
            roll >= drop_from && roll < drop_from + cfg.drop_rate,
            rng.random::<f64>() < cfg.pending_rate,
        )
    };
    if fail {
        state.lock().stats.injected_errors += 1;
        return error(500, "General Error");
    }
    // As Cloudinary does, the OCR runs (and is billed) when the request arrives, whatever
    // then becomes of the answer.
    let answer = {
        let mut inner = state.lock();
        let Some(&i) = inner.index.get(id) else {
            return error(404, &format!("Resource not found - {public_id}"));
        };
        inner.stats.ocr_billed += 1;
        *inner.ocr_billed.entry(id.clone()).or_default() += 1;
        inner.ocr_done.insert(id.clone());
        let status = if cfg.ocr_fails.contains(public_id) {
            "failed"
        } else if pending {
            "pending"
        } else {
            "complete"
        };
        resource_json(&inner.assets[i], &cfg.cloud_name, Some(status))
    };
    if hang {
        state.lock().stats.injected_errors += 1;
        tokio::time::sleep(cfg.hang).await;
    }
    if drop {
        state.lock().stats.injected_errors += 1;
        return dropped();
    }
    ok(answer)
}

/// An answer whose connection breaks before its body: the status line and headers go out,
/// then the body fails, and the server closes the connection.
fn dropped() -> Reply {
    let body = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection dropped",
        ))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(body))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_whose_offset_starts_with_the_hex_digit_c_page_on() {
        let assets = crate::generate(50_100);
        let refs: Vec<&Asset> = assets.iter().collect();
        let cursor = format!("c{:x}", 50_000);
        assert!(cursor.starts_with("cc"), "{cursor}");
        let page = listing(refs, Some(&cursor), 500, "demo", false);
        let ids: Vec<&str> = page["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["public_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 100);
        assert_eq!(ids[0], assets[50_000].public_id);
        assert!(page.get("next_cursor").is_none(), "the last page");
    }
}

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
pub(crate) const STORED_TYPES: [&str; 3] = ["upload", "private", "authenticated"];

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

pub(crate) type Reply = Response;

pub(crate) fn error(status: u16, message: &str) -> Reply {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(json!({"error": {"message": message}}))).into_response()
}

pub(crate) fn ok(body: Value) -> Reply {
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
    upload_body(headers, body).await.map(|(params, _)| params)
}

/// A file sent as a `multipart/form-data` part with a file name (the SDKs' upload of a local
/// file or a stream).
#[derive(Debug, Clone)]
pub(crate) struct FilePart {
    pub filename: String,
    pub bytes: Bytes,
}

/// A request body's parameters (as [`body_params`]) and its `file` part, when sent as a file.
async fn upload_body(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Vec<(String, String)>, Option<FilePart>), String> {
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
        return Ok((
            object
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
                .collect(),
            None,
        ));
    }
    if content_type.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(&content_type).map_err(|e| e.to_string())?;
        let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let (mut params, mut file) = (Vec::new(), None);
        while let Some(field) = multipart.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_string();
            if name == "file"
                && let Some(filename) = field.file_name().map(str::to_string)
            {
                let bytes = field.bytes().await.map_err(|e| e.to_string())?;
                file = Some(FilePart { filename, bytes });
                continue;
            }
            let value = field.text().await.map_err(|e| e.to_string())?;
            params.push((name, value));
        }
        return Ok((params, file));
    }
    Ok((form(&body), None))
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    uri.query().map(|q| form(q.as_bytes())).unwrap_or_default()
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
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

/// The `asset_id` an asset's identity yields, unless the run gave it another (see
/// [`crate::Inner::asset_ids`]).
pub(crate) fn derived_asset_id(id: &AssetId) -> String {
    format!("{:032x}", fxhash(&format!("{}/{}", id.0, id.1)))
}

/// Sets the `asset_id` of a resource answer, or of each of a listing's `resources`, to the one
/// the run gave it, where it gave one.
fn stamp_asset_ids(inner: &crate::Inner, answer: &mut Value) {
    if inner.asset_ids.is_empty() {
        return;
    }
    let stamp = |resource: &mut Value| {
        let id = (
            resource["type"].as_str().unwrap_or_default().to_string(),
            resource["public_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        if let Some(asset_id) = inner.asset_ids.get(&id) {
            resource["asset_id"] = asset_id.as_str().into();
        }
    };
    match answer.get_mut("resources").and_then(Value::as_array_mut) {
        Some(resources) => resources.iter_mut().for_each(stamp),
        None => stamp(answer),
    }
}

/// [`resource_json`] of the asset at `i`, with the `asset_id` the run gave it.
pub(crate) fn resource_of(inner: &crate::Inner, i: usize, cloud: &str, ocr: Option<&str>) -> Value {
    let mut v = resource_json(&inner.assets[i], cloud, ocr);
    stamp_asset_ids(inner, &mut v);
    v
}

fn resource_json(asset: &Asset, cloud: &str, ocr: Option<&str>) -> Value {
    let version = asset.answered_version();
    let path =
        percent_encoding::utf8_percent_encode(&asset.public_id, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let mut v = json!({
        "asset_id": derived_asset_id(&asset.id()),
        "public_id": asset.public_id,
        "format": asset.format,
        "version": version,
        "resource_type": "image",
        "type": asset.delivery_type,
        "created_at": asset.created_at,
        "folder": asset.folder(),
        "tags": asset.tags,
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

pub(crate) fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf29ce484222325u128, |h, b| {
        (h ^ b as u128).wrapping_mul(0x100000001b3)
    })
}

/// What a listing's resources carry beyond the basic fields.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    /// A Search answer: `total_count`, and `uploaded_at`, `status` and `filename` per resource.
    search: bool,
    /// `tags` per resource: Cloudinary lists them only when asked (`tags=true` for the Admin
    /// API's listings, `with_field: tags` for Search); details and OCR answers always carry
    /// them.
    tags: bool,
}

fn listing(
    assets: Vec<&Asset>,
    params_cursor: Option<&str>,
    max_results: usize,
    cloud: &str,
    shape: Shape,
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
            if !shape.tags
                && let Some(fields) = v.as_object_mut()
            {
                fields.remove("tags");
            }
            if shape.search {
                v["uploaded_at"] = a.uploaded_at.as_deref().unwrap_or(&a.created_at).into();
                v["filename"] = a.public_id.rsplit('/').next().unwrap_or_default().into();
                v["status"] = "active".into();
            }
            v
        })
        .collect();
    let mut body = json!({"resources": page});
    if shape.search {
        body["total_count"] = assets.len().into();
        body["time"] = 12.into();
    }
    if end < assets.len() {
        body["next_cursor"] = format!("c{end:x}").into();
    }
    body
}

/// Whether a Search request asks for `field` (`with_field` or `fields`, a string or a list).
fn asks_for(req: &Value, field: &str) -> bool {
    ["with_field", "fields"]
        .iter()
        .any(|key| match req.get(*key) {
            Some(Value::String(s)) => s.split(',').any(|f| f.trim() == field),
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(field)),
            _ => false,
        })
}

/// The order a Search request asks for (`sort_by: [{"created_at": "asc"}, ...]`): by
/// `created_at`, `uploaded_at` or `public_id`; Cloudinary's default is the newest first. Ties
/// fall back to the public_id, then the delivery type, so that pages never overlap.
fn search_order(req: &Value) -> Result<Vec<(String, bool)>, String> {
    let Some(sort_by) = req.get("sort_by") else {
        return Ok(vec![("created_at".into(), false)]);
    };
    let items = match sort_by {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let mut keys = Vec::new();
    for item in items {
        let Some(fields) = item.as_object() else {
            return Err(format!(
                "sort_by takes {{field: direction}} objects, not {item}"
            ));
        };
        for (field, direction) in fields {
            if !["created_at", "uploaded_at", "public_id"].contains(&field.as_str()) {
                return Err(format!("sort_by {field:?} is not supported here"));
            }
            let ascending = match direction.as_str() {
                Some("asc") => true,
                Some("desc") => false,
                _ => return Err(format!("sort_by direction {direction} is not asc or desc")),
            };
            keys.push((field.clone(), ascending));
        }
    }
    Ok(keys)
}

fn sort_assets(assets: &mut [&Asset], keys: &[(String, bool)]) {
    let key = |a: &Asset, field: &str| -> String {
        match field {
            "uploaded_at" => a
                .uploaded_at
                .clone()
                .unwrap_or_else(|| a.created_at.clone()),
            "public_id" => a.public_id.clone(),
            _ => a.created_at.clone(),
        }
    };
    assets.sort_by(|a, b| {
        keys.iter()
            .map(|(field, ascending)| {
                let order = key(a, field).cmp(&key(b, field));
                if *ascending { order } else { order.reverse() }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.public_id.cmp(&b.public_id))
            .then_with(|| a.delivery_type.cmp(&b.delivery_type))
    });
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    matches!(param(params, name), Some("true" | "1"))
}

/// `max_results` of an Admin API listing: 10 unless given, at most 500.
fn list_max_results(params: &[(String, String)]) -> usize {
    param(params, "max_results")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize)
        .clamp(1, 500)
}

/// `GET usage`: the account's plan and, as Cloudinary reports each add-on, the OCR add-on's
/// use this month against its monthly limit. Cloudinary refreshes these figures periodically;
/// the emulator's are live.
fn usage(state: &State, cfg: &EmulatorConfig) -> Value {
    let inner = state.lock();
    let used = inner.stats.ocr_billed;
    let limit = cfg.ocr_limit;
    let percent = if limit == 0 {
        0.0
    } else {
        (10_000.0 * used as f64 / limit as f64).round() / 100.0
    };
    let today = time::OffsetDateTime::now_utc().date();
    json!({
        "plan": "Advanced",
        "last_updated": today.to_string(),
        "date_requested": format!("{today}T00:00:00Z"),
        "resources": inner.assets.len(),
        "derived_resources": 0,
        "objects": {"usage": inner.assets.len()},
        "adv_ocr": {"usage": used, "limit": limit, "used_percent": percent},
    })
}

pub(crate) async fn dispatch(
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
    if let Some(action) = rest.strip_prefix("image/")
        && ["upload", "rename", "destroy"].contains(&action)
        && method == Method::POST
    {
        let (params, file) = match upload_body(&headers, body).await {
            Ok(p) => p,
            Err(e) => return error(400, &e),
        };
        return match action {
            "upload" => crate::upload::upload(&state, &cfg, &params, file).await,
            "rename" => crate::upload::rename(&state, &cfg, &params).await,
            _ => crate::upload::destroy(&state, &cfg, &params).await,
        };
    }

    if !authorized(&headers, &cfg) {
        state.lock().stats.unauthorized += 1;
        return error(401, "Invalid credentials");
    }

    if rest == "triggers" || rest.starts_with("triggers/") {
        let quota = match admin_quota(&state, &cfg) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        let mut params = query(&uri);
        if method != Method::GET {
            match body_params(&headers, body).await {
                Ok(p) => params.extend(p),
                Err(e) => return with_headers(error(400, &e), quota),
            }
        }
        let reply = crate::notify::triggers_api(&state, &method, rest, &params);
        return with_headers(reply, quota);
    }

    if rest == "usage" && method == Method::GET {
        let quota = match admin_quota(&state, &cfg) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        state.lock().stats.usage_calls += 1;
        return with_headers(ok(usage(&state, &cfg)), quota);
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
        // Cloudinary's default page is 50 results, its largest 500.
        let max_results = req
            .get("max_results")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(50)
            .clamp(1, 500) as usize;
        let cursor = req.get("next_cursor").and_then(Value::as_str);
        let filter = match crate::search::parse(expression) {
            Ok(f) => f,
            Err(e) => {
                let message = format!("Invalid search expression {expression:?}: {e}");
                return with_headers(error(400, &message), quota);
            }
        };
        let order = match search_order(&req) {
            Ok(o) => o,
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
            .filter(|a| indexed(a) && filter.matches(a))
            .collect();
        sort_assets(&mut matched, &order);
        let shape = Shape {
            search: true,
            tags: asks_for(&req, "tags"),
        };
        let mut body = listing(matched, cursor, max_results, &cfg.cloud_name, shape);
        stamp_asset_ids(&inner, &mut body);
        return with_headers(ok(body), quota);
    }

    // The images carrying a tag, of every delivery type. The SDKs leave a tag's slashes
    // unescaped, the project's client escapes them: the rest of the path is the tag either way.
    if let Some(encoded_tag) = rest.strip_prefix("resources/image/tags/")
        && method == Method::GET
    {
        let quota = match admin_quota(&state, &cfg) {
            Ok(h) => h,
            Err(r) => return *r,
        };
        let Some(tag) = decode(encoded_tag) else {
            return with_headers(error(400, "tag is not valid UTF-8 percent-encoding"), quota);
        };
        let q = query(&uri);
        let mut inner = state.lock();
        inner.stats.list_calls += 1;
        inner.stats.tag_list_calls += 1;
        let assets: Vec<&Asset> = inner
            .assets
            .iter()
            .filter(|a| a.tags.contains(&tag))
            .collect();
        let shape = Shape {
            search: false,
            tags: flag(&q, "tags"),
        };
        let mut body = listing(
            assets,
            param(&q, "next_cursor"),
            list_max_results(&q),
            &cfg.cloud_name,
            shape,
        );
        stamp_asset_ids(&inner, &mut body);
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
        let ids: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "public_ids[]")
            .map(|(_, v)| v.as_str())
            .collect();
        if let (false, Some(delivery_type)) = (ids.is_empty(), listed_type) {
            return with_headers(by_ids(&state, &cfg, delivery_type, &ids), quota);
        }
        let prefix = param(&q, "prefix").unwrap_or_default();
        let mut inner = state.lock();
        inner.stats.list_calls += 1;
        let mut assets: Vec<&Asset> = inner
            .assets
            .iter()
            .filter(|a| listed_type.is_none_or(|t| a.delivery_type == t))
            .filter(|a| a.public_id.starts_with(prefix))
            .collect();
        // Cloudinary sorts a listing by prefix by public_id.
        if !prefix.is_empty() {
            assets.sort_by(|a, b| a.public_id.cmp(&b.public_id));
        }
        let shape = Shape {
            search: false,
            tags: flag(&q, "tags"),
        };
        let mut body = listing(
            assets,
            param(&q, "next_cursor"),
            list_max_results(&q),
            &cfg.cloud_name,
            shape,
        );
        stamp_asset_ids(&inner, &mut body);
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

/// `GET resources/image/{type}?public_ids[]=…`: the resources of those ids (up to 100; an id
/// without one is left out), with their OCR only when the emulator is told Cloudinary answers it.
fn by_ids(state: &State, cfg: &EmulatorConfig, delivery_type: &str, ids: &[&str]) -> Reply {
    if ids.len() > 100 {
        return error(400, "public_ids: at most 100");
    }
    let mut inner = state.lock();
    inner.stats.by_ids_calls += 1;
    let resources: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            let key: AssetId = (delivery_type.to_string(), (*id).to_string());
            let i = *inner.index.get(&key)?;
            let status = (cfg.info_by_ids && inner.ocr_done.contains(&key)).then(|| {
                if cfg.ocr_fails.contains(*id) {
                    "failed"
                } else {
                    "complete"
                }
            });
            Some(resource_of(&inner, i, &cfg.cloud_name, status))
        })
        .collect();
    ok(json!({ "resources": resources }))
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
    ok(resource_of(
        &inner,
        i,
        &cfg.cloud_name,
        done.then_some(status),
    ))
}

async fn explicit(state: &State, cfg: &EmulatorConfig, params: &[(String, String)]) -> Reply {
    let params = params.to_vec();
    state.lock().stats.explicit_calls += 1;
    if let Err(refused) = signed_call(state, cfg, &params) {
        return *refused;
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

/// The checks of every Upload API call, in Cloudinary's order: the Upload API's rate limit,
/// the API key, the signature, then the timestamp's freshness. `Err` is the refusal.
pub(crate) fn signed_call(
    state: &State,
    cfg: &EmulatorConfig,
    params: &[(String, String)],
) -> Result<(), Box<Reply>> {
    upload_quota(state, cfg)?;
    if param(params, "api_key") != Some(cfg.api_key.as_str()) {
        state.lock().stats.unauthorized += 1;
        return Err(Box::new(error(401, "Invalid api_key")));
    }
    let given = param(params, "signature").unwrap_or_default();
    if !signature_matches(params, &cfg.api_secret, given, cfg.require_sha256) {
        state.lock().stats.unauthorized += 1;
        return Err(Box::new(error(
            401,
            "Invalid Signature. String to sign does not match",
        )));
    }
    let fresh = param(params, "timestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .is_some_and(|t| {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            t + 3600 >= now && t <= now + 3600
        });
    if !fresh {
        return Err(Box::new(error(
            400,
            "Stale request - reported time is more than 1 hour from the current time",
        )));
    }
    Ok(())
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

/// Whether the OCR add-on's monthly limit refuses an OCR now: reached by the switch, or by the
/// OCRs billed so far (counted as refused when it does).
fn monthly_limit_refuses(inner: &mut crate::Inner, cfg: &EmulatorConfig) -> bool {
    let refused = cfg.monthly_limit_reached || inner.stats.ocr_billed >= cfg.ocr_limit;
    if refused {
        inner.stats.rate_limited += 1;
    }
    refused
}

async fn ocr(state: &State, cfg: &EmulatorConfig, id: &AssetId) -> Reply {
    let public_id = id.1.as_str();
    if monthly_limit_refuses(&mut state.lock(), cfg) {
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
        // Checked again where the OCR is billed: requests that passed the first check together
        // may not all fit under the limit.
        if monthly_limit_refuses(&mut inner, cfg) {
            return monthly_limit();
        }
        inner.stats.ocr_billed += 1;
        *inner.ocr_billed.entry(id.clone()).or_default() += 1;
        inner.ocr_done.insert(id.clone());
        let status = if cfg.ocr_fails.contains(public_id) {
            "failed"
        } else if pending || cfg.pending.contains(public_id) {
            "pending"
        } else {
            "complete"
        };
        resource_of(&inner, i, &cfg.cloud_name, Some(status))
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

    fn state(assets: Vec<Asset>, change: impl FnOnce(&mut EmulatorConfig)) -> Arc<State> {
        let mut cfg = EmulatorConfig::new("demo");
        change(&mut cfg);
        Arc::new(State::new(cfg, assets))
    }

    /// One authenticated request, answered as the server answers it: status, headers, body.
    async fn call(
        state: &Arc<State>,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        let cfg = state.config();
        let credentials = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", cfg.api_key, cfg.api_secret));
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Basic {credentials}")).unwrap(),
        );
        let body = match body {
            Some(v) => {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let uri: Uri = format!("/v1_1/{}/{path_and_query}", cfg.cloud_name)
            .parse()
            .unwrap();
        let reply = dispatch(AxState(state.clone()), method, uri, headers, body).await;
        let status = reply.status().as_u16();
        let headers = reply.headers().clone();
        let bytes = axum::body::to_bytes(reply.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn public_ids(resources: &[Value]) -> Vec<String> {
        resources
            .iter()
            .map(|r| r["public_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Every page of an Admin API listing (`path` with its query), and how many pages.
    async fn list_all(state: &Arc<State>, path: &str) -> (Vec<Value>, usize) {
        let (mut resources, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        loop {
            let with_cursor = match &cursor {
                Some(c) => format!("{path}&next_cursor={c}"),
                None => path.to_string(),
            };
            let (status, headers, body) = call(state, Method::GET, &with_cursor, None).await;
            assert_eq!(status, 200, "{with_cursor}: {body}");
            assert!(headers.contains_key("X-FeatureRateLimit-Remaining"));
            pages += 1;
            resources.extend(body["resources"].as_array().unwrap().iter().cloned());
            cursor = body["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                return (resources, pages);
            }
        }
    }

    /// Every page of a search (`request` without its cursor), its total_count, and how many
    /// pages.
    async fn search_all(state: &Arc<State>, request: Value) -> (Vec<Value>, u64, usize) {
        let (mut resources, mut pages, mut total) = (Vec::new(), 0, None);
        let mut req = request;
        loop {
            let (status, headers, body) =
                call(state, Method::POST, "resources/search", Some(req.clone())).await;
            assert_eq!(status, 200, "{req}: {body}");
            assert!(headers.contains_key("X-FeatureRateLimit-Remaining"));
            let count = body["total_count"].as_u64().unwrap();
            assert_eq!(
                *total.get_or_insert(count),
                count,
                "every page has the total"
            );
            pages += 1;
            resources.extend(body["resources"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(c) => req["next_cursor"] = c.into(),
                None => return (resources, total.unwrap_or(0), pages),
            }
        }
    }

    /// A lookup of several resources by `public_ids[]` names each that exists, with its OCR
    /// where it has one, or without any `info` when the emulator answers as a Cloudinary that
    /// leaves it out.
    #[tokio::test]
    async fn a_lookup_by_public_ids_answers_each_resource_with_or_without_its_ocr() {
        let corpus = crate::generate(40);
        let uploads: Vec<String> = corpus
            .iter()
            .filter(|a| a.delivery_type == "upload")
            .map(|a| a.public_id.clone())
            .take(3)
            .collect();
        for info_by_ids in [true, false] {
            let state = state(corpus.clone(), |c| c.info_by_ids = info_by_ids);
            state
                .lock()
                .ocr_done
                .insert(("upload".to_string(), uploads[0].clone()));
            let query: Vec<String> = uploads
                .iter()
                .map(String::as_str)
                .chain(["no such id"])
                .map(|id| {
                    let id = percent_encoding::utf8_percent_encode(
                        id,
                        percent_encoding::NON_ALPHANUMERIC,
                    );
                    format!("public_ids%5B%5D={id}")
                })
                .collect();
            let path = format!("resources/image/upload?{}", query.join("&"));
            let (status, headers, body) = call(&state, Method::GET, &path, None).await;
            assert_eq!(status, 200, "{body}");
            assert!(headers.contains_key("X-FeatureRateLimit-Remaining"));
            let resources = body["resources"].as_array().unwrap();
            assert_eq!(public_ids(resources), uploads, "the missing id left out");
            let with_ocr: Vec<bool> = resources
                .iter()
                .map(|r| r["info"]["ocr"]["adv_ocr"]["status"] == "complete")
                .collect();
            assert_eq!(with_ocr, [info_by_ids, false, false], "{info_by_ids}");
            assert_eq!(state.lock().stats.by_ids_calls, 1);
        }
    }

    #[tokio::test]
    async fn a_listing_by_prefix_names_the_images_starting_with_it_by_public_id() {
        let corpus = crate::generate(600);
        let state = state(corpus.clone(), |_| {});
        let prefix = "street signs/";
        let mut expected: Vec<String> = corpus
            .iter()
            .filter(|a| a.delivery_type == "upload" && a.public_id.starts_with(prefix))
            .map(|a| a.public_id.clone())
            .collect();
        expected.sort();
        assert!(expected.len() > 20, "{}", expected.len());
        let encoded =
            percent_encoding::utf8_percent_encode(prefix, percent_encoding::NON_ALPHANUMERIC);
        let (resources, pages) = list_all(
            &state,
            &format!("resources/image/upload?prefix={encoded}&max_results=7"),
        )
        .await;
        assert_eq!(public_ids(&resources), expected);
        assert_eq!(pages, expected.len().div_ceil(7));
        assert!(
            resources.iter().all(|r| r.get("tags").is_none()),
            "not asked for"
        );
        assert!(resources.iter().all(|r| r["folder"] == "street signs"));

        let (tagged, _) = list_all(
            &state,
            "resources/image/private?prefix=plus%2Bsign%2F&tags=true&max_results=500",
        )
        .await;
        let expected: Vec<&Asset> = corpus
            .iter()
            .filter(|a| a.delivery_type == "private" && a.public_id.starts_with("plus+sign/"))
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(tagged.len(), expected.len());
        for (r, a) in tagged.iter().zip(&expected) {
            assert_eq!(r["public_id"], a.public_id.as_str());
            assert_eq!(r["tags"], json!(a.tags), "asked for with tags=true");
        }
        let (none, _) = list_all(&state, "resources/image/upload?prefix=no%20such%2F").await;
        assert!(none.is_empty());
        // Without a prefix, as before: the corpus's order.
        let (all, _) = list_all(&state, "resources/image/upload?max_results=500").await;
        let uploads: Vec<String> = corpus
            .iter()
            .filter(|a| a.delivery_type == "upload")
            .map(|a| a.public_id.clone())
            .collect();
        assert_eq!(public_ids(&all), uploads);
    }

    #[tokio::test]
    async fn a_listing_by_tag_names_every_type_carrying_it_as_an_admin_call() {
        let corpus = crate::generate(600);
        let state = state(corpus.clone(), |_| {});
        for (tag, path_tag) in [("needs review", "needs%20review"), ("invoice", "invoice")] {
            let expected: Vec<&Asset> = corpus
                .iter()
                .filter(|a| a.tags.iter().any(|t| t == tag))
                .collect();
            let (resources, pages) = list_all(
                &state,
                &format!("resources/image/tags/{path_tag}?max_results=30&tags=true"),
            )
            .await;
            assert_eq!(pages, expected.len().div_ceil(30), "{tag}");
            let listed: Vec<(String, String)> = resources
                .iter()
                .map(|r| {
                    assert!(r["tags"].as_array().unwrap().iter().any(|t| t == tag));
                    (
                        r["type"].as_str().unwrap().into(),
                        r["public_id"].as_str().unwrap().into(),
                    )
                })
                .collect();
            let ids: Vec<(String, String)> = expected.iter().map(|a| a.id()).collect();
            assert_eq!(listed, ids, "{tag}");
            for t in STORED_TYPES {
                assert!(listed.iter().any(|(lt, _)| lt == t), "{tag}: no {t} image");
            }
        }
        // A tag with a slash, as the project's client sends it (encoded) and as the SDKs do.
        let mut tagged = corpus[1].clone();
        tagged.tags = vec!["paid/2024".into()];
        let state = self::state(vec![tagged.clone(), corpus[2].clone()], |_| {});
        for path in [
            "resources/image/tags/paid%2F2024?x=1",
            "resources/image/tags/paid/2024?x=1",
        ] {
            let (resources, _) = list_all(&state, path).await;
            assert_eq!(public_ids(&resources), [tagged.public_id.clone()], "{path}");
            assert!(resources[0].get("tags").is_none(), "not asked for");
        }
        let (none, _) = list_all(&state, "resources/image/tags/nobody?x=1").await;
        assert!(none.is_empty());
        let stats = state.lock().stats.clone();
        assert_eq!(
            (
                stats.admin_calls,
                stats.list_calls,
                stats.tag_list_calls,
                stats.details_calls
            ),
            (3, 3, 3, 0)
        );
    }

    #[tokio::test]
    async fn search_counts_pages_and_filters_by_folder_tag_format_and_type() {
        let corpus = crate::generate(600);
        let state = state(corpus.clone(), |_| {});
        let expression = "resource_type:image AND (folder:\"street signs\" OR folder:deep/*) \
                          AND tags:invoice AND -format:png AND NOT type:authenticated";
        let expected: Vec<&Asset> = corpus
            .iter()
            .filter(|a| {
                (a.folder() == "street signs" || a.public_id.starts_with("deep/"))
                    && a.tags.iter().any(|t| t == "invoice")
                    && a.format != "png"
                    && a.delivery_type != "authenticated"
            })
            .collect();
        assert!(expected.len() > 10, "{}", expected.len());
        let (resources, total, pages) = search_all(
            &state,
            json!({"expression": expression, "max_results": 4, "sort_by": [{"created_at": "asc"}], "with_field": ["tags"]}),
        )
        .await;
        assert_eq!(total as usize, expected.len());
        assert_eq!(pages, expected.len().div_ceil(4));
        let ids: Vec<&str> = expected.iter().map(|a| a.public_id.as_str()).collect();
        assert_eq!(public_ids(&resources), ids, "oldest first, as asked");
        for (r, a) in resources.iter().zip(&expected) {
            assert_eq!(r["folder"], a.folder());
            assert_eq!(r["tags"], json!(a.tags), "asked for with with_field");
            assert_eq!(r["filename"], a.public_id.rsplit('/').next().unwrap());
        }

        // Cloudinary's defaults: 50 a page, the newest first, no tags.
        let (status, _, page) = call(
            &state,
            Method::POST,
            "resources/search",
            Some(json!({"expression": "public_id:plain-*"})),
        )
        .await;
        assert_eq!(status, 200);
        let plain: Vec<&Asset> = corpus
            .iter()
            .filter(|a| a.public_id.starts_with("plain-"))
            .collect();
        assert_eq!(page["total_count"], plain.len());
        let listed = page["resources"].as_array().unwrap();
        assert_eq!(listed.len(), 50.min(plain.len()));
        assert_eq!(
            listed[0]["public_id"],
            plain.last().unwrap().public_id.as_str()
        );
        assert!(listed[0].get("tags").is_none());
        let (status, _, page) = call(
            &state,
            Method::POST,
            "resources/search",
            Some(json!({"expression": "", "max_results": 10_000})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            page["resources"].as_array().unwrap().len(),
            500,
            "at most 500"
        );
        assert_eq!(page["total_count"], 600);

        // What the lister sends for an incremental pass still answers.
        let (_, total, _) = search_all(
            &state,
            json!({"expression": "resource_type:image AND uploaded_at>=\"2021-01-01T09:00:00Z\"",
                   "max_results": 500, "sort_by": [{"created_at": "asc"}]}),
        )
        .await;
        assert_eq!(total, 600 - 540);
    }

    #[tokio::test]
    async fn a_bad_expression_is_a_400_naming_the_fault_and_still_an_admin_call() {
        let state = state(crate::generate(10), |_| {});
        for (expression, says) in [
            ("tags:cats AND (format:png", "missing ')'"),
            ("colour:red", "\"colour\""),
            ("tags:\"cats", "unclosed quote"),
        ] {
            let (status, headers, body) = call(
                &state,
                Method::POST,
                "resources/search",
                Some(json!({"expression": expression})),
            )
            .await;
            assert_eq!(status, 400, "{expression}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{expression}: {message}");
            assert!(message.contains("Invalid search expression"), "{message}");
            assert!(headers.contains_key("X-FeatureRateLimit-Limit"));
        }
        let (status, _, body) = call(
            &state,
            Method::POST,
            "resources/search",
            Some(json!({"expression": "", "sort_by": [{"bytes": "asc"}]})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(state.lock().stats.admin_calls, 4);
    }

    #[tokio::test]
    async fn usage_reports_billed_ocrs_against_the_limit_which_then_refuses_with_420() {
        let corpus = crate::generate(5);
        let state = state(corpus.clone(), |c| c.ocr_limit = 2);
        let (status, headers, usage) = call(&state, Method::GET, "usage", None).await;
        assert_eq!(status, 200);
        assert!(headers.contains_key("X-FeatureRateLimit-Remaining"));
        assert_eq!(
            usage["adv_ocr"],
            json!({"usage": 0, "limit": 2, "used_percent": 0.0})
        );
        assert!(usage["plan"].is_string());
        let today = time::OffsetDateTime::now_utc().date().to_string();
        assert_eq!(usage["last_updated"], today.as_str());

        let update = |i: usize| {
            let path = format!(
                "resources/image/upload/{}",
                percent_encoding::utf8_percent_encode(
                    &corpus[i].public_id,
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            let state = state.clone();
            async move { call(&state, Method::POST, &path, Some(json!({"ocr": "adv_ocr"}))).await }
        };
        assert_eq!(update(0).await.0, 200);
        let (_, _, usage) = call(&state, Method::GET, "usage", None).await;
        assert_eq!(
            usage["adv_ocr"],
            json!({"usage": 1, "limit": 2, "used_percent": 50.0})
        );
        assert_eq!(update(1).await.0, 200);
        let (status, headers, refused) = update(2).await;
        assert_eq!(status, 420);
        assert_eq!(
            refused["error"]["message"],
            "Monthly limit of adv_ocr add-on usage reached"
        );
        assert!(headers.contains_key("X-FeatureRateLimit-Reset"));
        let (_, _, usage) = call(&state, Method::GET, "usage", None).await;
        assert_eq!(
            usage["adv_ocr"],
            json!({"usage": 2, "limit": 2, "used_percent": 100.0})
        );
        let stats = state.lock().stats.clone();
        assert_eq!(
            (stats.ocr_billed, stats.ocr_requests, stats.usage_calls),
            (2, 2, 3)
        );
        assert_eq!(stats.rate_limited, 1);
        // The details of an OCR'd image carry its tags and folder.
        let (_, _, details) = call(
            &state,
            Method::GET,
            "resources/image/upload/invoices%2F2021%2Finv-000000",
            None,
        )
        .await;
        assert_eq!(
            details["tags"],
            json!(["invoice", "receipt", "needs review"])
        );
        assert_eq!(details["folder"], "invoices/2021");
    }

    #[test]
    fn cursors_whose_offset_starts_with_the_hex_digit_c_page_on() {
        let assets = crate::generate(50_100);
        let refs: Vec<&Asset> = assets.iter().collect();
        let cursor = format!("c{:x}", 50_000);
        assert!(cursor.starts_with("cc"), "{cursor}");
        let page = listing(refs, Some(&cursor), 500, "demo", Shape::default());
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

//! The Upload API calls that change the account: `upload` (a new asset, or a new version over
//! one), `rename` and `destroy`, each signed as `explicit` is and each announced by a
//! notification (see `notify.rs`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderValue;
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};

use crate::server::{
    FilePart, Reply, STORED_TYPES, derived_asset_id, error, ok, param, resource_of, signed_call,
};
use crate::{Asset, AssetId, EmulatorConfig, Inner, State};

/// Cloudinary's versions are Unix seconds; [`Asset::version`] is their offset from this.
pub(crate) const VERSION_BASE: u64 = 1_600_000_000;

/// The keys of an upload answer that its notification carries.
const UPLOAD_NOTIFIED: &[&str] = &[
    "asset_id",
    "public_id",
    "version",
    "version_id",
    "width",
    "height",
    "format",
    "resource_type",
    "created_at",
    "tags",
    "bytes",
    "type",
    "etag",
    "placeholder",
    "url",
    "secure_url",
    "original_filename",
    "overwritten",
];

/// A boolean parameter as the SDKs send it (`1`/`0`, `true`/`false`); `None` when absent.
fn bool_param(params: &[(String, String)], name: &str) -> Option<bool> {
    match param(params, name)? {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The delivery type a parameter names (`default` when absent): one the account stores, or
/// the refusal's message.
fn delivery_type(params: &[(String, String)], name: &str, default: &str) -> Result<String, String> {
    let t = param(params, name)
        .filter(|t| !t.is_empty())
        .unwrap_or(default);
    if STORED_TYPES.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(format!("Invalid {name} {t}"))
    }
}

/// What an upload's `file` holds: its bytes, the format it suggests, its original file name.
struct Content {
    bytes: Vec<u8>,
    format: Option<String>,
    original_filename: String,
}

/// The uploaded file: a multipart file part, a data URI (`data:image/png;base64,...`) or, for
/// anything else, the parameter's text itself.
fn content(params: &[(String, String)], file: Option<FilePart>) -> Result<Content, String> {
    if let Some(part) = file {
        let name = part.filename.rsplit(['/', '\\']).next().unwrap_or_default();
        let (stem, extension) = match name.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() => (stem, Some(ext.to_ascii_lowercase())),
            _ => (name, None),
        };
        return Ok(Content {
            bytes: part.bytes.to_vec(),
            format: extension,
            original_filename: stem.to_string(),
        });
    }
    let Some(text) = param(params, "file").filter(|f| !f.is_empty()) else {
        return Err("Missing required parameter - file".into());
    };
    if let Some(uri) = text.strip_prefix("data:")
        && let Some((media, data)) = uri.split_once(";base64,")
    {
        let data: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("Invalid data URI: {e}"))?;
        let format = media
            .split(';')
            .next()
            .and_then(|m| m.strip_prefix("image/"))
            .map(|f| f.trim_end_matches("+xml").replace("jpeg", "jpg"));
        return Ok(Content {
            bytes,
            format,
            original_filename: "file".into(),
        });
    }
    Ok(Content {
        bytes: text.as_bytes().to_vec(),
        format: None,
        original_filename: "file".into(),
    })
}

/// The next version offset of `id`: the upload's Unix time, but above the asset's current
/// version and every version handed out for `id` before.
fn next_version(inner: &Inner, id: &AssetId, current: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .saturating_sub(VERSION_BASE);
    let issued = inner.versions.get(id).copied().unwrap_or(0);
    now.max(current + 1).max(issued + 1)
}

/// Remembers the version an identity now has (versions handed out never go back).
fn issue(inner: &mut Inner, id: &AssetId, version: u64) {
    let issued = inner.versions.entry(id.clone()).or_default();
    *issued = (*issued).max(version);
}

/// Takes the asset at `i` out of the account with its per-identity state; its `asset_id`.
fn remove(inner: &mut Inner, i: usize) -> (Asset, String) {
    let asset = inner.assets.remove(i);
    let id = asset.id();
    inner.reindex();
    inner.uploaded.remove(&id);
    inner.ocr_done.remove(&id);
    let asset_id = inner
        .asset_ids
        .remove(&id)
        .unwrap_or_else(|| derived_asset_id(&id));
    (asset, asset_id)
}

/// An answer with Cloudinary's `X-Request-Id` header.
fn with_request_id(mut reply: Reply, request_id: &str) -> Reply {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        reply.headers_mut().insert("X-Request-Id", value);
    }
    reply
}

/// The dimensions of a text's "image": wider for longer lines, taller for more lines.
fn dimensions(text: Option<&str>) -> (u64, u64) {
    let Some(text) = text else {
        return (800, 600);
    };
    let longest = text.lines().map(|l| l.chars().count()).max().unwrap_or(0) as u64;
    let lines = text.lines().count() as u64;
    (
        (longest * 12).clamp(100, 4000),
        (lines * 30).clamp(100, 4000),
    )
}

/// `POST image/upload`: creates the asset `(type, public_id)` (a random public_id when none is
/// given) or, unless `overwrite` is false, uploads a new version over it. Its OCR text is the
/// file's bytes when they are UTF-8. With `overwrite` false over an existing asset, the answer
/// is that asset with `existing: true`, and nothing changes.
pub(crate) async fn upload(
    state: &Arc<State>,
    cfg: &EmulatorConfig,
    params: &[(String, String)],
    file: Option<FilePart>,
) -> Reply {
    state.lock().stats.upload_calls += 1;
    if let Err(refused) = signed_call(state, cfg, params) {
        return *refused;
    }
    let delivery_type = match delivery_type(params, "type", "upload") {
        Ok(t) => t,
        Err(e) => return error(400, &e),
    };
    let content = match content(params, file) {
        Ok(c) => c,
        Err(e) => return error(400, &e),
    };
    let public_id = match param(params, "public_id").filter(|p| !p.is_empty()) {
        Some(p) => p.to_string(),
        None => {
            let mut rng = rand::rng();
            (0..20)
                .map(|_| {
                    let c = rng.random_range(0..36u8);
                    char::from(if c < 10 { b'0' + c } else { b'a' + c - 10 })
                })
                .collect()
        }
    };
    let overwrite = bool_param(params, "overwrite").unwrap_or(true);
    let tags: Vec<String> = param(params, "tags")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let text = std::str::from_utf8(&content.bytes)
        .ok()
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let (width, height) = dimensions(text.as_deref());
    let format = param(params, "format")
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .or(content.format)
        .unwrap_or_else(|| "png".into());
    let request_id = crate::notify::random_hex(32);
    let id: AssetId = (delivery_type, public_id);
    let now = crate::notify::now_rfc3339();
    let (mut answer, overwritten) = {
        let mut inner = state.lock();
        let existing = inner.index.get(&id).copied();
        if let Some(i) = existing
            && !overwrite
        {
            let mut answer = resource_of(&inner, i, &cfg.cloud_name, None);
            answer["existing"] = true.into();
            return with_request_id(ok(answer), &request_id);
        }
        let i = match existing {
            Some(i) => i,
            None => {
                inner.assets.push(Asset {
                    public_id: id.1.clone(),
                    delivery_type: id.0.clone(),
                    format: String::new(),
                    bytes: 0,
                    width: 0,
                    height: 0,
                    created_at: now.clone(),
                    text: None,
                    locale: None,
                    version: 0,
                    uploaded_at: None,
                    tags: Vec::new(),
                });
                let i = inner.assets.len() - 1;
                inner.index.insert(id.clone(), i);
                inner
                    .asset_ids
                    .insert(id.clone(), crate::notify::random_hex(32));
                i
            }
        };
        let version = next_version(&inner, &id, inner.assets[i].version);
        issue(&mut inner, &id, version);
        let asset = &mut inner.assets[i];
        asset.version = version;
        asset.format = format;
        asset.bytes = content.bytes.len() as u64;
        (asset.width, asset.height) = (width, height);
        asset.text = text;
        asset.tags = tags;
        if existing.is_some() {
            asset.uploaded_at = Some(now);
        }
        inner.ocr_done.remove(&id);
        inner.uploaded.insert(id.clone(), std::time::Instant::now());
        (
            resource_of(&inner, i, &cfg.cloud_name, None),
            existing.is_some(),
        )
    };
    let version = answer["version"].as_u64().unwrap_or_default();
    answer["version_id"] = crate::notify::random_hex(32).into();
    answer["signature"] = response_signature(&id.1, version, cfg).into();
    answer["etag"] = format!(
        "{:032x}",
        crate::server::fxhash(&String::from_utf8_lossy(&content.bytes))
    )
    .into();
    answer["placeholder"] = false.into();
    answer["original_filename"] = content.original_filename.into();
    if overwritten {
        answer["overwritten"] = true.into();
    }
    let fields: serde_json::Map<String, Value> = UPLOAD_NOTIFIED
        .iter()
        .filter_map(|k| Some((k.to_string(), answer.get(*k)?.clone())))
        .collect();
    crate::notify::notify(
        state,
        cfg,
        "upload",
        &request_id,
        Value::Object(fields),
        param(params, "notification_url"),
    );
    with_request_id(ok(answer), &request_id)
}

/// The `signature` of an upload answer, as `cloudinary.utils.verify_api_response_signature`
/// checks it: `public_id` and `version` signed (signature version 1) with the API secret.
fn response_signature(public_id: &str, version: u64, cfg: &EmulatorConfig) -> String {
    use sha2::Digest;
    let signed = format!("public_id={public_id}&version={version}{}", cfg.api_secret);
    let digest = if cfg.require_sha256 {
        sha2::Sha256::digest(signed.as_bytes()).to_vec()
    } else {
        sha1::Sha1::digest(signed.as_bytes()).to_vec()
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `POST image/rename`: moves the asset `(type, from_public_id)`, with its text and its OCR,
/// to `(to_type or type, to_public_id)`; a 404 when there is none, a 400 when the target
/// exists unless `overwrite` (which replaces it). It keeps its `asset_id` and, unless
/// `rename_bumps_version`, its version. The answer is the renamed resource.
pub(crate) async fn rename(
    state: &Arc<State>,
    cfg: &EmulatorConfig,
    params: &[(String, String)],
) -> Reply {
    state.lock().stats.rename_calls += 1;
    if let Err(refused) = signed_call(state, cfg, params) {
        return *refused;
    }
    let (Some(from), Some(to)) = (
        param(params, "from_public_id").filter(|p| !p.is_empty()),
        param(params, "to_public_id").filter(|p| !p.is_empty()),
    ) else {
        let missing = if param(params, "from_public_id").is_none_or(str::is_empty) {
            "from_public_id"
        } else {
            "to_public_id"
        };
        return error(400, &format!("Missing required parameter - {missing}"));
    };
    let from_type = match delivery_type(params, "type", "upload") {
        Ok(t) => t,
        Err(e) => return error(400, &e),
    };
    let to_type = match delivery_type(params, "to_type", &from_type) {
        Ok(t) => t,
        Err(e) => return error(400, &e),
    };
    let overwrite = bool_param(params, "overwrite").unwrap_or(false);
    let from_id: AssetId = (from_type.clone(), from.to_string());
    let to_id: AssetId = (to_type.clone(), to.to_string());
    let request_id = crate::notify::random_hex(32);
    let (answer, asset_id, version) = {
        let mut inner = state.lock();
        let Some(&i) = inner.index.get(&from_id) else {
            return error(404, &format!("Resource not found - {from}"));
        };
        if from_id == to_id {
            let answer = resource_of(&inner, i, &cfg.cloud_name, None);
            return with_request_id(ok(answer), &request_id);
        }
        if let Some(&target) = inner.index.get(&to_id) {
            if !overwrite {
                return error(400, &format!("to_public_id ({to}) already exists"));
            }
            remove(&mut inner, target);
        }
        let i = inner.index[&from_id];
        let asset_id = inner
            .asset_ids
            .remove(&from_id)
            .unwrap_or_else(|| derived_asset_id(&from_id));
        let version = if cfg.rename_bumps_version {
            next_version(&inner, &to_id, inner.assets[i].version)
        } else {
            inner.assets[i].version
        };
        issue(&mut inner, &to_id, version);
        let asset = &mut inner.assets[i];
        asset.public_id = to_id.1.clone();
        asset.delivery_type = to_id.0.clone();
        asset.version = version;
        inner.reindex();
        inner.asset_ids.insert(to_id.clone(), asset_id.clone());
        if inner.ocr_done.remove(&from_id) {
            inner.ocr_done.insert(to_id.clone());
        }
        inner.uploaded.remove(&from_id);
        inner
            .uploaded
            .insert(to_id.clone(), std::time::Instant::now());
        let answer = resource_of(&inner, i, &cfg.cloud_name, None);
        (answer, asset_id, answer_version(version))
    };
    let mut fields = json!({
        "asset_id": asset_id,
        "resource_type": "image",
        "type": from_type,
        "from_public_id": from,
        "to_public_id": to,
    });
    if to_type != from_type {
        fields["to_type"] = to_type.into();
    }
    if cfg.rename_carries_version {
        fields["version"] = version.into();
    }
    crate::notify::notify(
        state,
        cfg,
        "rename",
        &request_id,
        fields,
        param(params, "notification_url"),
    );
    with_request_id(ok(answer), &request_id)
}

/// The `version` an answer shows for a version offset.
fn answer_version(offset: u64) -> u64 {
    VERSION_BASE + offset
}

/// `POST image/destroy`: removes the asset `(type, public_id)`; `{"result": "ok"}`, or
/// `{"result": "not found"}` (HTTP 200 both, as Cloudinary answers).
pub(crate) async fn destroy(
    state: &Arc<State>,
    cfg: &EmulatorConfig,
    params: &[(String, String)],
) -> Reply {
    state.lock().stats.destroy_calls += 1;
    if let Err(refused) = signed_call(state, cfg, params) {
        return *refused;
    }
    let Some(public_id) = param(params, "public_id").filter(|p| !p.is_empty()) else {
        return error(400, "Missing required parameter - public_id");
    };
    let delivery_type = match delivery_type(params, "type", "upload") {
        Ok(t) => t,
        Err(e) => return error(400, &e),
    };
    let id: AssetId = (delivery_type, public_id.to_string());
    let request_id = crate::notify::random_hex(32);
    let removed = {
        let mut inner = state.lock();
        inner.index.get(&id).copied().map(|i| remove(&mut inner, i))
    };
    let Some((asset, asset_id)) = removed else {
        return with_request_id(ok(json!({"result": "not found"})), &request_id);
    };
    let fields = json!({
        "resources": [{
            "resource_type": "image",
            "type": asset.delivery_type,
            "public_id": asset.public_id,
            "asset_id": asset_id,
            "version": answer_version(asset.version),
        }],
    });
    crate::notify::notify(
        state,
        cfg,
        "delete",
        &request_id,
        fields,
        param(params, "notification_url"),
    );
    with_request_id(ok(json!({"result": "ok"})), &request_id)
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use reqwest::Method;
    use serde_json::json;

    use crate::testing::{admin, emulator, ocr_text};

    fn now_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn an_upload_creates_an_asset_then_overwrites_it_with_a_higher_version_billable_again() {
        let emu = emulator(crate::generate(3), |_| {}).await;
        let client = emu.upload_client();
        let before = now_secs();
        let first = client
            .upload(Some("notes/a b&c"), b"HELLO\n", "upload", true)
            .await
            .unwrap();
        for key in [
            "public_id",
            "version",
            "version_id",
            "signature",
            "width",
            "height",
            "format",
            "resource_type",
            "created_at",
            "tags",
            "bytes",
            "type",
            "etag",
            "placeholder",
            "url",
            "secure_url",
            "asset_id",
            "original_filename",
        ] {
            assert!(first.get(key).is_some(), "{key} missing from {first}");
        }
        assert_eq!(first["public_id"], "notes/a b&c");
        assert_eq!(first["bytes"], 6);
        assert_eq!(first["format"], "png");
        assert!(first.get("overwritten").is_none());
        let v1 = first["version"].as_u64().unwrap();
        assert!(
            v1 >= before && v1 <= now_secs(),
            "{v1} is the upload's time"
        );

        let (status, _, details) = admin(
            &emu,
            Method::GET,
            "resources/image/upload/notes%2Fa%20b%26c",
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (&details["version"], &details["asset_id"]),
            (&first["version"], &first["asset_id"])
        );
        let (_, _, listed) = admin(
            &emu,
            Method::GET,
            "resources/image/upload?max_results=50",
            None,
        )
        .await;
        assert!(
            listed["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["public_id"] == "notes/a b&c")
        );
        assert_eq!(
            ocr_text(&emu, "notes/a b&c").await.as_deref(),
            Some("HELLO\n")
        );

        let second = client
            .upload(Some("notes/a b&c"), b"BYE\n", "upload", true)
            .await
            .unwrap();
        assert_eq!(second["overwritten"], true);
        assert!(
            second["version"].as_u64().unwrap() > v1,
            "versions increase within a second too"
        );
        assert_eq!(second["asset_id"], first["asset_id"]);
        assert_ne!(second["version_id"], first["version_id"]);
        assert_eq!(
            ocr_text(&emu, "notes/a b&c").await.as_deref(),
            Some("BYE\n")
        );
        assert_eq!(
            emu.ocr_billed("notes/a b&c"),
            2,
            "an overwrite is billable again"
        );

        let kept = client
            .upload(Some("notes/a b&c"), b"IGNORED\n", "upload", false)
            .await
            .unwrap();
        assert_eq!(kept["existing"], true);
        assert_eq!(kept["version"], second["version"]);
        let (_, _, details) = admin(
            &emu,
            Method::GET,
            "resources/image/upload/notes%2Fa%20b%26c",
            None,
        )
        .await;
        assert_eq!(
            details["info"]["ocr"]["adv_ocr"]["data"][0]["fullTextAnnotation"]["text"],
            "BYE\n"
        );

        let stats = emu.stats();
        assert_eq!(stats.upload_calls, 3);
        assert_eq!(stats.admin_calls, 5, "uploads are not Admin API calls");
    }

    #[tokio::test]
    async fn an_upload_without_public_id_gets_a_random_one_and_bytes_not_utf8_have_no_text() {
        let emu = emulator(Vec::new(), |_| {}).await;
        let answer = emu
            .upload_client()
            .upload(None, &[0xff, 0xfe, 0x00], "private", true)
            .await
            .unwrap();
        let public_id = answer["public_id"].as_str().unwrap();
        assert_eq!(public_id.len(), 20);
        assert_eq!(answer["type"], "private");
        let asset = &emu.assets()[0];
        assert_eq!(
            (asset.public_id.as_str(), asset.text.as_deref()),
            (public_id, None)
        );
        let tagged = emu
            .upload_client()
            .call(
                "upload",
                vec![
                    ("file".into(), "SIGN\n".into()),
                    ("public_id".into(), "tagged".into()),
                    ("tags".into(), "a, b c".into()),
                ],
            )
            .await
            .unwrap();
        assert_eq!(tagged["tags"], json!(["a", "b c"]));
        assert_eq!(
            ocr_text(&emu, "tagged").await.as_deref(),
            Some("SIGN\n"),
            "plain text is the file"
        );
    }

    #[tokio::test]
    async fn upload_calls_are_refused_with_a_wrong_secret_or_sha1_on_a_sha256_account() {
        let emu = emulator(Vec::new(), |c| c.require_sha256 = true).await;
        let c = emu.config();
        let wrong = crate::UploadClient::new(emu.base_url(), &c.cloud_name, &c.api_key, "wrong")
            .sha256(true);
        let refused = wrong
            .upload(Some("x"), b"X", "upload", true)
            .await
            .unwrap_err();
        assert_eq!(refused.status(), Some(401));
        let sha1 = emu.upload_client().sha256(false);
        assert_eq!(
            sha1.destroy("x", "upload").await.unwrap_err().status(),
            Some(401)
        );
        let answer = emu
            .upload_client()
            .upload(Some("x"), b"X", "upload", true)
            .await
            .unwrap();
        assert_eq!(answer["public_id"], "x");
        let bad_type = emu
            .upload_client()
            .upload(Some("x"), b"X", "fetch", true)
            .await
            .unwrap_err();
        assert_eq!(bad_type.status(), Some(400));
        assert_eq!(emu.stats().unauthorized, 2);
    }

    #[tokio::test]
    async fn rename_moves_the_asset_and_its_ocr_keeping_its_asset_id_and_version_unless_told() {
        let emu = emulator(crate::generate(2), |_| {}).await;
        let client = emu.upload_client();
        let uploaded = client
            .upload(Some("a"), b"A\n", "upload", true)
            .await
            .unwrap();
        assert_eq!(ocr_text(&emu, "a").await.as_deref(), Some("A\n"));
        let renamed = client.rename("a", "b", "upload", false).await.unwrap();
        assert_eq!(renamed["public_id"], "b");
        assert_eq!(renamed["asset_id"], uploaded["asset_id"]);
        assert_eq!(renamed["version"], uploaded["version"]);
        let (status, _, _) = admin(&emu, Method::GET, "resources/image/upload/a", None).await;
        assert_eq!(status, 404);
        let (_, _, details) = admin(&emu, Method::GET, "resources/image/upload/b", None).await;
        assert_eq!(
            details["info"]["ocr"]["adv_ocr"]["status"], "complete",
            "the OCR moves with the asset"
        );
        assert_eq!(details["asset_id"], uploaded["asset_id"]);

        client
            .upload(Some("c"), b"C\n", "upload", true)
            .await
            .unwrap();
        let taken = client.rename("b", "c", "upload", false).await.unwrap_err();
        assert_eq!(taken.status(), Some(400));
        assert!(taken.to_string().contains("already exists"), "{taken}");
        let missing = client
            .rename("nobody", "d", "upload", false)
            .await
            .unwrap_err();
        assert_eq!(missing.status(), Some(404));
        let replaced = client.rename("b", "c", "upload", true).await.unwrap();
        assert_eq!(replaced["asset_id"], uploaded["asset_id"]);
        assert_eq!(ocr_text(&emu, "c").await.as_deref(), Some("A\n"));

        emu.configure(|c| c.rename_bumps_version = true);
        let bumped = client.rename("c", "e", "upload", false).await.unwrap();
        assert!(
            bumped["version"].as_u64() > replaced["version"].as_u64(),
            "{bumped}"
        );
        let private = client.call(
            "rename",
            vec![
                ("from_public_id".into(), "e".into()),
                ("to_public_id".into(), "e".into()),
                ("to_type".into(), "private".into()),
            ],
        );
        assert_eq!(private.await.unwrap()["type"], "private");
        assert_eq!(emu.stats().rename_calls, 6);
    }

    #[tokio::test]
    async fn destroy_removes_the_asset_and_a_new_upload_there_gets_a_higher_version() {
        let emu = emulator(crate::generate(3), |_| {}).await;
        let client = emu.upload_client();
        let first = client
            .upload(Some("gone"), b"G\n", "upload", true)
            .await
            .unwrap();
        assert_eq!(
            client.destroy("gone", "upload").await.unwrap(),
            json!({"result": "ok"})
        );
        assert_eq!(
            client.destroy("gone", "upload").await.unwrap(),
            json!({"result": "not found"})
        );
        let (status, _, _) = admin(&emu, Method::GET, "resources/image/upload/gone", None).await;
        assert_eq!(status, 404);
        assert_eq!(emu.assets().len(), 3);
        let corpus_id = emu.assets()[1].public_id.clone();
        assert_eq!(
            client.destroy(&corpus_id, "upload").await.unwrap()["result"],
            "ok"
        );
        assert_eq!(emu.assets().len(), 2);
        let (status, _, _) = admin(
            &emu,
            Method::GET,
            &format!(
                "resources/image/upload/{}",
                percent_encoding::utf8_percent_encode(
                    &emu.assets()[1].public_id,
                    percent_encoding::NON_ALPHANUMERIC
                )
            ),
            None,
        )
        .await;
        assert_eq!(
            status, 200,
            "the assets after the removed one are still found"
        );
        let again = client
            .upload(Some("gone"), b"G\n", "upload", true)
            .await
            .unwrap();
        assert!(again["version"].as_u64() > first["version"].as_u64());
        assert_ne!(again["asset_id"], first["asset_id"], "a new asset");
        assert!(again.get("overwritten").is_none());
        assert_eq!(emu.stats().destroy_calls, 3);
    }
}

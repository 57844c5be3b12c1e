//! The project's Cloudinary client against the emulator: auth, signatures, quota, paging,
//! scoped listings (prefix, tag, Search) and usage.

use std::time::Duration;

use cloudinary_emulator::{Asset, Emulator, EmulatorConfig, generate};
use shared::cloudinary::{CloudinaryClient, CloudinaryError, OcrMethod};
use shared::config::Env;
use shared::error::{Classified, ErrorClass};
use shared::lister::{AssetSource, Listing};
use shared::scope::Scope;
use shared::secret::Secret;

fn client(emu: &Emulator, url: &str, method: OcrMethod) -> CloudinaryClient {
    let base = emu.base_url();
    let mut cfg = Env(|name: &str| match name {
        "CLOUDINARY_API_BASE" => Some(base.clone()),
        _ => None,
    })
    .cloudinary(Some(Secret::new(url)))
    .unwrap();
    cfg.ocr_method = method;
    CloudinaryClient::new(&cfg).unwrap()
}

fn status(e: &CloudinaryError) -> u16 {
    match e {
        CloudinaryError::Status { status, .. } => *status,
        other => panic!("expected an HTTP status error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_credentials_and_bad_signatures_are_refused() {
    let emu = Emulator::start(EmulatorConfig::new("c"), generate(3), 0)
        .await
        .unwrap();
    let id = emu.assets()[1].public_id.clone();
    let wrong = emu.cloudinary_url().replace('@', "x@");
    for method in [OcrMethod::AdminUpdate, OcrMethod::Explicit] {
        let err = client(&emu, &wrong, method)
            .request_ocr::<serde_json::Value>(&id, "image", "upload")
            .await
            .unwrap_err();
        assert_eq!(status(&err), 401, "{method}");
        assert_eq!(
            err.class(),
            ErrorClass::Transient,
            "a credentials fault is retried, not dead-lettered"
        );
    }
    let good = client(&emu, &emu.cloudinary_url(), OcrMethod::Explicit);
    let answer = good
        .request_ocr::<serde_json::Value>(&id, "image", "upload")
        .await
        .unwrap();
    assert_eq!(answer.value["public_id"], id.as_str());
    assert!(
        answer.quota.is_none(),
        "the Upload API carries no Admin quota headers"
    );
    let stats = emu.stats();
    assert_eq!(
        (stats.explicit_calls, stats.admin_calls, stats.unauthorized),
        (2, 0, 2)
    );
}

#[tokio::test]
async fn unknown_assets_are_404_and_permanent() {
    let emu = Emulator::start(EmulatorConfig::new("c"), generate(3), 0)
        .await
        .unwrap();
    let c = client(&emu, &emu.cloudinary_url(), OcrMethod::AdminUpdate);
    let err = c
        .request_ocr::<serde_json::Value>("no/such asset?", "image", "upload")
        .await
        .unwrap_err();
    assert_eq!(status(&err), 404);
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        err.to_string()
            .contains("Resource not found - no/such asset?"),
        "{err}"
    );
}

#[tokio::test]
async fn the_quota_is_reported_then_enforced_with_420() {
    let mut cfg = EmulatorConfig::new("c");
    cfg.admin_limit = 2;
    cfg.admin_window = Duration::from_secs(3600);
    let emu = Emulator::start(cfg, generate(5), 0).await.unwrap();
    let c = client(&emu, &emu.cloudinary_url(), OcrMethod::AdminUpdate);
    let first = c.list_page("upload", "", None, 2).await.unwrap();
    let q = first.quota.expect("quota headers");
    assert_eq!((q.limit, q.remaining), (2, 1));
    let reset = q.reset.expect("reset date");
    // Windows are aligned to the clock, as Cloudinary's are to the hour.
    let reset_secs = reset
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(reset_secs % 3600, 0, "the reset falls on the hour");
    c.list_page(
        "upload",
        "",
        first.value.into_page(None).next_cursor.as_deref(),
        2,
    )
    .await
    .unwrap();
    let err = c.list_page("upload", "", None, 2).await.unwrap_err();
    assert_eq!(status(&err), 420);
    assert_eq!(err.class(), ErrorClass::RateLimited);
    // HTTP dates have second precision.
    let retry_at = err.retry_at().expect("reset carried by the error");
    assert!(
        retry_at
            .duration_since(reset)
            .unwrap_or_else(|e| e.duration())
            < Duration::from_secs(1)
    );
    assert_eq!(emu.stats().rate_limited, 1);
}

#[tokio::test]
async fn ended_quota_windows_are_recorded_with_their_use() {
    let mut cfg = EmulatorConfig::new("c");
    cfg.admin_limit = 100;
    cfg.admin_window = Duration::from_secs(1);
    let emu = Emulator::start(cfg, generate(5), 0).await.unwrap();
    let c = client(&emu, &emu.cloudinary_url(), OcrMethod::AdminUpdate);
    let reset_of = |page: &shared::cloudinary::Answer<_>| {
        page.quota.and_then(|q| q.reset).expect("reset date")
    };
    let first = reset_of(&c.list_page("upload", "", None, 2).await.unwrap());
    let second = reset_of(&c.list_page("upload", "", None, 2).await.unwrap());
    // Two calls in one window, unless the window turned in between.
    let in_first = if first == second { 2 } else { 1 };
    let wait = second
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    c.list_page("upload", "", None, 2).await.unwrap();
    let windows = emu.stats().windows;
    assert!(!windows.is_empty(), "the first window ended");
    assert_eq!(windows[0].used, in_first);
    assert_eq!(windows[0].opened_ms % 1000, 0, "windows open on the second");
    assert_eq!(windows.iter().map(|w| w.used).sum::<u64>(), 2);
}

#[tokio::test]
async fn listing_pages_with_cursors_and_search_filters_by_date() {
    let emu = Emulator::start(EmulatorConfig::new("c"), generate(23), 0)
        .await
        .unwrap();
    let c = client(&emu, &emu.cloudinary_url(), OcrMethod::Explicit);
    // Through the lister's port, as the lister pages: each delivery type by its own path.
    for t in ["upload", "private", "authenticated"] {
        let mut cursor = None;
        let mut ids = Vec::new();
        loop {
            let listing = Listing::of_type(t);
            let page = c.page(&listing, cursor.as_deref(), 10).await.unwrap();
            for a in page.assets {
                assert_eq!(a.delivery_type, t);
                ids.push(a.public_id);
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        let expected: Vec<String> = emu
            .assets()
            .into_iter()
            .filter(|a| a.delivery_type == t)
            .map(|a| a.public_id)
            .collect();
        assert_eq!(ids, expected, "{t}");
    }
    assert_eq!(
        emu.assets()
            .iter()
            .filter(|a| a.delivery_type == "private")
            .count(),
        1
    );

    // Generated assets are a minute apart from 2021-01-01T00:00:00Z.
    let page = c
        .page(
            &Listing::CreatedSince("2021-01-01T00:20:00Z".into()),
            None,
            500,
        )
        .await
        .unwrap();
    assert_eq!(page.assets.len(), 3);
    assert!(page.next_cursor.is_none());
    let none = c.search_page("tags:cats", None, 10).await.unwrap();
    assert!(
        none.value.into_page(None).assets.is_empty(),
        "no image is tagged cats"
    );
    let err = c
        .search_page("tags:cats AND (format:png", None, 10)
        .await
        .unwrap_err();
    assert_eq!(status(&err), 400);
    assert!(err.to_string().contains("missing ')'"), "{err}");
}

/// Every page of `listing` through the lister's port: `(delivery type, public_id)` in the order
/// listed, and how many pages.
async fn list_all(
    c: &CloudinaryClient,
    listing: &Listing,
    page_size: u32,
) -> (Vec<(String, String)>, usize) {
    let (mut ids, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let page = c.page(listing, cursor.as_deref(), page_size).await.unwrap();
        pages += 1;
        ids.extend(
            page.assets
                .into_iter()
                .map(|a| (a.delivery_type, a.public_id)),
        );
        cursor = page.next_cursor;
        if cursor.is_none() {
            return (ids, pages);
        }
    }
}

fn ids_of<'a>(assets: impl IntoIterator<Item = &'a Asset>) -> Vec<(String, String)> {
    assets.into_iter().map(Asset::id).collect()
}

/// A scoped lister's listings through the project's client, each paged to its end and naming
/// exactly the corpus's images in scope: a folder by public_id prefix (by public_id), a tag
/// across delivery types, and a scope as one Search expression (its escaped values, OR groups
/// and a user's expression; oldest first), incremental passes included. `usage` reports the
/// OCR add-on's use and limit as the budget reads them.
#[tokio::test]
async fn scoped_listings_name_exactly_the_images_in_scope_and_usage_counts_ocrs() {
    let mut config = EmulatorConfig::new("c");
    config.ocr_limit = 40;
    let emu = Emulator::start(config, generate(300), 0).await.unwrap();
    let corpus = emu.assets();
    let c = client(&emu, &emu.cloudinary_url(), OcrMethod::AdminUpdate);

    let folder = Listing::Type {
        delivery_type: "upload".into(),
        prefix: "100% real/".into(),
    };
    let mut expected: Vec<&Asset> = corpus
        .iter()
        .filter(|a| a.delivery_type == "upload" && a.public_id.starts_with("100% real/"))
        .collect();
    expected.sort_by(|a, b| a.public_id.cmp(&b.public_id));
    let (listed, pages) = list_all(&c, &folder, 7).await;
    assert_eq!(listed, ids_of(expected.iter().copied()));
    assert_eq!(pages, expected.len().div_ceil(7));

    let (mut listed, pages) = list_all(&c, &Listing::Tag("needs review".into()), 9).await;
    let mut expected = ids_of(
        corpus
            .iter()
            .filter(|a| a.tags.iter().any(|t| t == "needs review")),
    );
    assert_eq!(pages, expected.len().div_ceil(9));
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);
    for t in ["upload", "private", "authenticated"] {
        assert!(
            listed.iter().any(|(lt, _)| lt == t),
            "a {t} image carries the tag"
        );
    }

    let by_age = |mut assets: Vec<&Asset>| {
        assets.sort_by(|a, b| (&a.created_at, &a.public_id).cmp(&(&b.created_at, &b.public_id)));
        ids_of(assets)
    };
    let scope = Scope::parse(
        "street signs/, deep/",
        "invoice, receipt",
        "",
        "upload, private",
        "JPG, .webp",
    )
    .unwrap();
    let listings = scope.listings();
    let [search @ Listing::Search(_)] = listings.as_slice() else {
        panic!("folders with tags list by Search: {listings:?}")
    };
    let in_scope = |a: &&Asset| {
        ["upload", "private"].contains(&a.delivery_type.as_str())
            && (a.public_id.starts_with("street signs/") || a.public_id.starts_with("deep/"))
            && a.tags.iter().any(|t| t == "invoice" || t == "receipt")
            && ["jpg", "webp"].contains(&a.format.as_str())
    };
    let expected = by_age(corpus.iter().filter(in_scope).collect());
    assert!(expected.len() > 10, "{}", expected.len());
    assert!(expected.iter().any(|(t, _)| t == "private"));
    let (listed, pages) = list_all(&c, search, 4).await;
    assert_eq!(listed, expected);
    assert_eq!(pages, expected.len().div_ceil(4));
    // An incremental pass of the scope: the same, uploaded at or after the time.
    let since = "2021-01-01T03:00:00Z";
    let (listed, _) = list_all(&c, &scope.incremental(since), 500).await;
    let expected = by_age(
        corpus
            .iter()
            .filter(in_scope)
            .filter(|a| a.created_at.as_str() >= since)
            .collect(),
    );
    assert!(!expected.is_empty());
    assert_eq!(listed, expected);
    // A user's expression, within the scope's types.
    let scope = Scope::parse(
        "",
        "",
        "width>1200 OR folder:\"menüs\"",
        "authenticated",
        "",
    )
    .unwrap();
    let (listed, _) = list_all(&c, &scope.listings()[0], 500).await;
    let expected = by_age(
        corpus
            .iter()
            .filter(|a| a.delivery_type == "authenticated")
            .filter(|a| a.width > 1200 || a.folder() == "menüs")
            .collect(),
    );
    assert!(!expected.is_empty());
    assert_eq!(listed, expected);

    let usage = |answer: shared::cloudinary::Answer<serde_json::Value>| {
        assert!(answer.quota.is_some(), "an Admin API call");
        shared::cloudinary::addon_usage(&answer.value).expect("the add-on's usage")
    };
    let before = usage(c.usage().await.unwrap());
    assert_eq!((before.usage, before.limit), (0, 40));
    c.request_ocr::<serde_json::Value>(&corpus[0].public_id, "image", "upload")
        .await
        .unwrap();
    let after = AssetSource::addon_usage(&c).await.unwrap().unwrap();
    assert_eq!((after.usage, after.limit), (1, 40));
    let stats = emu.stats();
    assert_eq!((stats.usage_calls, stats.ocr_billed), (2, 1));
}

/// Runs `infra/scripts/cloudinary_sdk_check.py MODE` (Cloudinary's own Python SDK, pinned in
/// the project's virtualenv) against `emu`; its output, or a failure with it.
/// The text of the private image under the SDK check's first public id.
const PRIVATE_TEXT: &str = "PRIVATE\n";

fn sdk_check(emu: &Emulator, mode: &str, ids: &[&str], text: &str) -> String {
    sdk_run(
        emu,
        mode,
        &[
            ("SDK_CHECK_IDS", ids.join(",")),
            ("SDK_CHECK_TEXT", text.into()),
            ("SDK_CHECK_PRIVATE_TEXT", PRIVATE_TEXT.into()),
        ],
    )
}

fn sdk_run(emu: &Emulator, mode: &str, env: &[(&str, String)]) -> String {
    let (root, python) = crate::common::venv_python();
    let out = std::process::Command::new(python)
        .arg(root.join("infra/scripts/cloudinary_sdk_check.py"))
        .arg(mode)
        .env("CLOUDINARY_URL", emu.cloudinary_url())
        .env("CLOUDINARY_API_BASE", emu.base_url())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running Python");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "Cloudinary's SDK against the emulator ({mode}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Cloudinary's own Python SDK, a client nobody here wrote, uses the emulator as it would use
/// Cloudinary: paging, update with OCR (a JSON body), explicit with OCR (multipart, SHA-1 and
/// SHA-256), details, a private image under an upload image's public id, 404, 401 and 420; and
/// an account that requires SHA-256 refuses SHA-1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudinarys_own_sdk_is_answered_as_cloudinary_would() {
    let mut assets = generate(5);
    assets[0].public_id = "sdk/first asset".into();
    assets[0].text = Some("STOP\n".into());
    assets[1].public_id = "sdk/second".into();
    let ids: Vec<String> = assets.iter().map(|a| a.public_id.clone()).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut private = assets[0].clone();
    private.delivery_type = "private".into();
    private.text = Some(PRIVATE_TEXT.into());
    let mut config = EmulatorConfig::new("sdkcloud");
    config.admin_limit = 30;
    let mut account = assets.clone();
    account.push(private);
    let emu = Emulator::start(config, account, 0).await.unwrap();
    let printed = sdk_check(&emu, "all", &ids, "STOP\n");
    assert!(printed.contains("every check passed"), "{printed}");
    let stats = emu.stats();
    assert_eq!(
        stats.ocr_billed, 5,
        "one update and two explicit calls of the upload images, one of each of the private one: {stats:?}"
    );
    assert_eq!(
        emu.ocr_billed_of(&("private".into(), "sdk/first asset".into())),
        2
    );
    assert!(
        stats.rate_limited >= 1 && stats.unauthorized >= 2,
        "{stats:?}"
    );

    let mut strict = EmulatorConfig::new("strictcloud");
    strict.require_sha256 = true;
    let emu = Emulator::start(strict, assets, 0).await.unwrap();
    let printed = sdk_check(&emu, "sha256-only", &ids, "");
    assert!(printed.contains("every check passed"), "{printed}");
}

/// Cloudinary's own SDK lists as a scoped lister and a plan do, against what the corpus says:
/// a Search expression over folders, a prefix, tags and formats (paged with `next_cursor`,
/// `total_count` on every page, Cloudinary's defaults, a 400 for a bad expression),
/// `resources_by_tag` across delivery types, `resources` by prefix, and `usage`, whose OCR
/// add-on count grows with each OCR until the monthly limit refuses further ones with 420.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudinarys_own_sdk_lists_searches_and_reads_usage_as_cloudinary_would() {
    let mut config = EmulatorConfig::new("sdkcloud");
    config.ocr_limit = 2;
    let emu = Emulator::start(config, generate(120), 0).await.unwrap();
    let corpus = emu.assets();
    let id = |a: &&Asset| serde_json::json!([a.delivery_type, a.public_id]);

    let mut searched: Vec<&Asset> = corpus
        .iter()
        .filter(|a| {
            (a.folder() == "street signs"
                || a.folder() == "menüs"
                || a.public_id.starts_with("deep/"))
                && a.tags.iter().any(|t| t == "invoice" || t == "receipt")
                && a.format != "png"
        })
        .collect();
    searched.sort_by(|a, b| (&a.created_at, &a.public_id).cmp(&(&b.created_at, &b.public_id)));
    let tagged: Vec<&Asset> = corpus
        .iter()
        .filter(|a| a.tags.iter().any(|t| t == "needs review"))
        .collect();
    let mut prefixed: Vec<&str> = corpus
        .iter()
        .filter(|a| a.delivery_type == "upload" && a.public_id.starts_with("street signs/"))
        .map(|a| a.public_id.as_str())
        .collect();
    prefixed.sort();
    let uploads: Vec<&str> = corpus
        .iter()
        .filter(|a| a.delivery_type == "upload")
        .map(|a| a.public_id.as_str())
        .take(3)
        .collect();
    assert!(searched.len() > 4 && searched.iter().any(|a| a.delivery_type == "private"));
    assert!(tagged.iter().any(|a| a.delivery_type != "upload") && prefixed.len() > 3);
    let expect = serde_json::json!({
        "search": {
            "expression": "resource_type:image AND (folder:\"street signs\" OR public_id:deep/* \
                           OR folder:menüs) AND (tags:invoice OR tags=receipt) AND -format:png",
            "max_results": 2,
            "ids": searched.iter().map(id).collect::<Vec<_>>(),
        },
        "bad_expression": "tags:invoice AND (format:png",
        "tag": {"tag": "needs review", "max_results": 4, "ids": tagged.iter().map(id).collect::<Vec<_>>()},
        "prefix": {"prefix": "street signs/", "max_results": 3, "ids": prefixed},
        "ocr": {"ids": uploads, "limit": 2},
    });
    let printed = sdk_run(
        &emu,
        "listings",
        &[("SDK_CHECK_EXPECT", expect.to_string())],
    );
    assert!(printed.contains("every check passed"), "{printed}");
    let stats = emu.stats();
    assert_eq!(
        (stats.ocr_billed, stats.rate_limited, stats.usage_calls),
        (2, 2, 4),
        "two OCRs billed, two refused past the limit: {stats:?}"
    );
    assert_eq!(stats.tag_list_calls as usize, tagged.len().div_ceil(4) + 2);
}

/// The project's own client signs in either hash, as the account requires.
#[tokio::test]
async fn the_client_signs_in_sha256_for_an_account_that_requires_it() {
    let mut strict = EmulatorConfig::new("strictcloud");
    strict.require_sha256 = true;
    let emu = Emulator::start(strict, generate(2), 0).await.unwrap();
    let id = emu.assets()[0].public_id.clone();
    let sha1 = client(&emu, &emu.cloudinary_url(), OcrMethod::Explicit);
    let err = sha1
        .request_ocr::<serde_json::Value>(&id, "image", "upload")
        .await
        .unwrap_err();
    assert_eq!(status(&err), 401, "{err}");
    let base = emu.base_url();
    let cfg = Env(|name: &str| match name {
        "CLOUDINARY_API_BASE" => Some(base.clone()),
        "CLOUDINARY_SIGNATURE_ALGORITHM" => Some("sha256".into()),
        _ => None,
    })
    .cloudinary(Some(Secret::new(emu.cloudinary_url())))
    .unwrap();
    let sha256 = CloudinaryClient::new(&cfg).unwrap();
    let answer = sha256
        .request_ocr::<serde_json::Value>(&id, "image", "upload")
        .await
        .unwrap();
    assert!(answer.value.pointer("/info/ocr/adv_ocr").is_some());
}

/// One public_id under two delivery types is two images: each read, OCR'd and billed on its
/// own path, by the Admin API and by `explicit` alike; a type that holds no such asset is a 404.
#[tokio::test]
async fn one_public_id_under_two_delivery_types_is_two_assets() {
    let mut private = crate::common::asset("signs/door", Some("PRIVATE\n"));
    private.delivery_type = "private".into();
    let assets = vec![
        crate::common::asset("signs/door", Some("PUBLIC\n")),
        private,
    ];
    let emu = Emulator::start(EmulatorConfig::new("c"), assets, 0)
        .await
        .unwrap();
    for method in [OcrMethod::AdminUpdate, OcrMethod::Explicit] {
        let c = client(&emu, &emu.cloudinary_url(), method);
        for (t, text) in [("upload", "PUBLIC"), ("private", "PRIVATE")] {
            let answer = c
                .request_ocr::<serde_json::Value>("signs/door", "image", t)
                .await
                .unwrap();
            assert_eq!(answer.value["type"], t);
            let got =
                answer.value["info"]["ocr"]["adv_ocr"]["data"][0]["fullTextAnnotation"]["text"]
                    .as_str()
                    .unwrap()
                    .to_string();
            assert_eq!(got.trim(), text, "{method:?} {t}");
            let back = c
                .get_resource::<serde_json::Value>("signs/door", "image", t)
                .await
                .unwrap();
            assert_eq!(back.value["type"], t);
        }
        let err = c
            .get_resource::<serde_json::Value>("signs/door", "image", "authenticated")
            .await
            .unwrap_err();
        assert_eq!(status(&err), 404);
    }
    assert_eq!(emu.ocr_billed("signs/door"), 2, "once per method");
    assert_eq!(
        emu.ocr_billed_of(&("private".into(), "signs/door".into())),
        2
    );
}

//! `notifications`: the stack's notifier (a Lambda function URL, output `NotifierUrl`)
//! registered with Cloudinary's notification triggers, one per event type the pipeline follows
//! (uploads, deletions, renames and moves), so that Cloudinary posts each such event to it.
//! Enabling and disabling are idempotent: a trigger already there is kept, a missing one is
//! not an error. Triggers of other URLs are never touched (Cloudinary notifies each).

use std::io::Write;

use anyhow::{Context, bail};
use serde::Serialize;
use shared::cloudinary::CloudinaryClient;
use shared::cloudinary::triggers::Trigger;

use crate::Cli;
use crate::terminal::escaped;

/// The stack output that holds the notifier's URL.
pub const NOTIFIER_OUTPUT: &str = "NotifierUrl";

/// The event types the notifier handles, in the order they are shown.
pub const EVENTS: [&str; 4] = ["upload", "delete", "rename", "move"];

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Action {
    /// Register the notifier for each event type (one trigger each); a trigger already there
    /// is kept.
    Enable {
        #[command(flatten)]
        target: Target,
        /// Only these event types, comma-separated (default: all of upload, delete, rename,
        /// move).
        #[arg(long, value_name = "EVENTS")]
        events: Option<String>,
    },
    /// Delete every trigger of the notifier's URL (whatever its event type); other URLs'
    /// triggers stay.
    Disable {
        #[command(flatten)]
        target: Target,
    },
    /// Show, for each event type, whether the notifier is registered, and which other URLs
    /// Cloudinary also notifies of it.
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Which URL the triggers notify.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The notifier's URL (default: the stack's output NotifierUrl), e.g. the local stack's.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// Parses `upload,delete`; an unknown name is an error naming the valid ones.
pub fn parse_events(list: Option<&str>) -> anyhow::Result<Vec<&'static str>> {
    let Some(list) = list else {
        return Ok(EVENTS.to_vec());
    };
    let mut chosen = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some(event) = EVENTS.iter().find(|e| **e == name) else {
            bail!(
                "--events: unknown event type {name:?}: expected one or more of {}",
                EVENTS.join(", ")
            );
        };
        if !chosen.contains(event) {
            chosen.push(*event);
        }
    }
    if chosen.is_empty() {
        bail!("--events needs at least one of {}", EVENTS.join(", "));
    }
    // In the usual order, whatever the order given.
    chosen.sort_by_key(|e| EVENTS.iter().position(|x| x == e));
    Ok(chosen)
}

/// Whether two trigger URLs name the same endpoint (a trailing slash aside: a function URL is
/// printed with one).
pub fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The notifier's URL: `--url`, else the stack's output; `Ok(None)` for a stack without the
/// output (deployed before the notifier), an error with neither a URL nor a stack.
pub fn notifier_url(cli: &Cli, target: &Target) -> anyhow::Result<Option<String>> {
    if let Some(url) = target.url.as_deref() {
        let url = url.trim();
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if !host.is_some_and(|h| !h.is_empty() && !h.starts_with('/')) {
            bail!(
                "--url {url:?}: expected the notifier's http(s) URL, e.g. https://ID.lambda-url.REGION.on.aws/"
            );
        }
        return Ok(Some(url.to_string()));
    }
    if cli.stack_name.as_deref().is_none_or(str::is_empty) {
        bail!(
            "which notifier? name the stack with --stack-name (its output {NOTIFIER_OUTPUT}), or give its URL with --url"
        );
    }
    Ok(cli.stack_notifier_url.clone().filter(|u| !u.is_empty()))
}

/// The URL, or the error for a stack without the output.
fn required(cli: &Cli, url: Option<String>) -> anyhow::Result<String> {
    url.with_context(|| {
        format!(
            "stack {:?} has no output {NOTIFIER_OUTPUT}: it was deployed before the notifier; deploy it again (or give the URL with --url)",
            cli.stack_name.as_deref().unwrap_or_default()
        )
    })
}

/// A Cloudinary error as the operator can act on it: refused credentials, the hourly quota.
fn refused(e: shared::cloudinary::CloudinaryError) -> anyhow::Error {
    use shared::cloudinary::CloudinaryError;
    match &e {
        CloudinaryError::Status {
            status: 401 | 403,
            message,
            ..
        } => anyhow::anyhow!(
            "Cloudinary refused the credentials ({e}): check CLOUDINARY_URL, or the stack's secret (`ocr-ctl secret set`); Cloudinary said: {message}"
        ),
        CloudinaryError::Status {
            status: 420 | 429,
            retry_at,
            message,
            ..
        } => {
            let when = retry_at
                .map(|t| format!(" after {}", shared::clock::rfc3339(t)))
                .unwrap_or_default();
            anyhow::anyhow!(
                "Cloudinary's Admin API refused the call ({e}): the account's hourly quota is spent; try again{when}. Cloudinary said: {message}"
            )
        }
        _ => anyhow::Error::new(e),
    }
}

/// One event type's triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventStatus {
    pub event_type: String,
    /// The notifier's URL has a trigger for it.
    pub enabled: bool,
    /// That trigger's id.
    pub trigger_id: Option<String>,
    /// Other URLs Cloudinary also notifies of it (its own `all` triggers included).
    pub other_urls: Vec<String>,
}

/// What `notifications status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationStatus {
    pub cloud_name: String,
    /// The notifier's URL; `None` when the stack has no output NotifierUrl.
    pub notifier_url: Option<String>,
    pub events: Vec<EventStatus>,
    /// The notifier's triggers of other event types (`disable` deletes them too).
    pub other_events: Vec<Trigger>,
}

impl NotificationStatus {
    /// From the account's triggers.
    pub fn new(cloud_name: &str, url: Option<&str>, triggers: &[Trigger]) -> Self {
        let ours = |t: &&Trigger| url.is_some_and(|u| same_url(&t.uri, u));
        let events = EVENTS
            .iter()
            .map(|event| {
                let of_event = |t: &&Trigger| t.event_type == *event || t.event_type == "all";
                let mine = triggers
                    .iter()
                    .filter(ours)
                    .find(|t| t.event_type == *event);
                let mut other_urls: Vec<String> = triggers
                    .iter()
                    .filter(of_event)
                    .filter(|t| !ours(t))
                    .map(|t| t.uri.clone())
                    .collect();
                other_urls.sort();
                other_urls.dedup();
                EventStatus {
                    event_type: event.to_string(),
                    enabled: mine.is_some(),
                    trigger_id: mine.map(|t| t.id.clone()),
                    other_urls,
                }
            })
            .collect();
        Self {
            cloud_name: cloud_name.to_string(),
            notifier_url: url.map(str::to_string),
            events,
            other_events: triggers
                .iter()
                .filter(ours)
                .filter(|t| !EVENTS.contains(&t.event_type.as_str()))
                .cloned()
                .collect(),
        }
    }
}

/// Runs `notifications ACTION`.
pub async fn run(
    cli: &Cli,
    sdk: &aws_config::SdkConfig,
    action: &Action,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let target = match action {
        Action::Enable { target, .. }
        | Action::Disable { target }
        | Action::Status { target, .. } => target,
    };
    let url = notifier_url(cli, target)?;
    // Checked before the credentials are read: an unknown event type is the user's to fix.
    let events = match action {
        Action::Enable { events, .. } => parse_events(events.as_deref())?,
        _ => Vec::new(),
    };
    if !matches!(action, Action::Status { .. }) {
        required(cli, url.clone())?;
    }
    let client = crate::spend::cloudinary(cli, sdk).await?;
    let existing = client.triggers(None).await.map_err(refused)?.value;
    match action {
        Action::Enable { .. } => {
            enable(&client, &required(cli, url)?, &events, &existing, out).await
        }
        Action::Disable { .. } => disable(&client, &required(cli, url)?, &existing, out).await,
        Action::Status { json, .. } => {
            let status = NotificationStatus::new(client.cloud_name(), url.as_deref(), &existing);
            if *json {
                let json = serde_json::to_string_pretty(&status)?;
                writeln!(out, "{}", crate::terminal::json_safe(json))?;
            } else {
                print_status(&status, cli, out)?;
            }
            Ok(())
        }
    }
}

async fn enable(
    client: &CloudinaryClient,
    url: &str,
    events: &[&str],
    existing: &[Trigger],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let (mut created, mut kept) = (0, 0);
    for event in events {
        let found = existing
            .iter()
            .find(|t| t.event_type == *event && same_url(&t.uri, url));
        match found {
            Some(t) => {
                kept += 1;
                writeln!(
                    out,
                    "{event:<8} already enabled (trigger {})",
                    escaped(&t.id)
                )?;
            }
            None => {
                let t = client
                    .create_trigger(url, event)
                    .await
                    .map_err(refused)
                    .with_context(|| {
                        format!(
                            "registering {event}; {created} trigger(s) created before it stay (run enable again to finish)"
                        )
                    })?
                    .value;
                created += 1;
                writeln!(out, "{event:<8} enabled (trigger {})", escaped(&t.id))?;
            }
        }
    }
    let url = escaped(url);
    match (created, kept) {
        (0, _) => writeln!(out, "notifications already enabled for {url}")?,
        (c, 0) => writeln!(out, "notifications enabled for {url}: {c} triggers created")?,
        (c, k) => writeln!(
            out,
            "notifications enabled for {url}: {c} triggers created, {k} already there"
        )?,
    }
    Ok(())
}

async fn disable(
    client: &CloudinaryClient,
    url: &str,
    existing: &[Trigger],
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let mine: Vec<&Trigger> = existing.iter().filter(|t| same_url(&t.uri, url)).collect();
    let mut deleted = 0;
    for t in &mine {
        match client.delete_trigger(&t.id).await {
            Ok(_) => {}
            // Deleted meanwhile: what disable wants.
            Err(shared::cloudinary::CloudinaryError::Status { status: 404, .. }) => {}
            Err(e) => {
                return Err(refused(e)).with_context(|| {
                    format!(
                        "deleting trigger {} ({}); {deleted} deleted before it (run disable again to finish)",
                        t.id, t.event_type
                    )
                });
            }
        }
        deleted += 1;
        writeln!(
            out,
            "{:<8} disabled (trigger {} deleted)",
            escaped(&t.event_type),
            escaped(&t.id)
        )?;
    }
    let url = escaped(url);
    if mine.is_empty() {
        writeln!(out, "notifications already disabled for {url}: no trigger")?;
    } else {
        writeln!(
            out,
            "notifications disabled for {url}: {deleted} triggers deleted"
        )?;
    }
    Ok(())
}

fn print_status(
    s: &NotificationStatus,
    cli: &Cli,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    writeln!(out, "cloud        {}", escaped(&s.cloud_name))?;
    match &s.notifier_url {
        Some(url) => writeln!(out, "notifier     {}", escaped(url))?,
        None => writeln!(
            out,
            "notifier     not set: stack {:?} has no output {NOTIFIER_OUTPUT} (deployed before the notifier; deploy it again)",
            cli.stack_name.as_deref().unwrap_or_default()
        )?,
    }
    for e in &s.events {
        let state = if e.enabled { "enabled" } else { "missing" };
        write!(out, "  {:<8}{state}", e.event_type)?;
        if let Some(id) = &e.trigger_id {
            write!(out, " (trigger {})", escaped(id))?;
        }
        if !e.other_urls.is_empty() {
            let others: Vec<String> = e.other_urls.iter().map(|u| escaped(u).into()).collect();
            write!(out, "; also notified: {}", others.join(", "))?;
        }
        writeln!(out)?;
    }
    for t in &s.other_events {
        writeln!(
            out,
            "  {:<8}also registered for this URL (trigger {})",
            escaped(&t.event_type),
            escaped(&t.id)
        )?;
    }
    let enabled = s.events.iter().filter(|e| e.enabled).count();
    let summary = match (enabled, s.notifier_url.is_some()) {
        (_, false) => "the notifier receives nothing: deploy the stack again, then `ocr-ctl notifications enable`".to_string(),
        (0, true) => "disabled: `ocr-ctl notifications enable` registers it".to_string(),
        (n, true) if n == s.events.len() => "enabled for every event type".to_string(),
        (n, true) => format!(
            "enabled for {n} of {} event types (`ocr-ctl notifications enable` adds the rest)",
            s.events.len()
        ),
    };
    writeln!(out, "status       {summary}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(id: &str, uri: &str, event_type: &str) -> Trigger {
        Trigger {
            id: id.into(),
            uri: uri.into(),
            event_type: event_type.into(),
            created_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn events_are_chosen_from_the_four_and_an_unknown_one_names_them() {
        assert_eq!(parse_events(None).unwrap(), EVENTS);
        assert_eq!(
            parse_events(Some("delete, upload,delete")).unwrap(),
            ["upload", "delete"]
        );
        let err = parse_events(Some("upload,destroy"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"destroy\"") && err.contains("upload, delete, rename, move"),
            "{err}"
        );
        assert!(parse_events(Some(" , ")).is_err());
    }

    #[test]
    fn the_url_is_given_or_the_stacks_and_an_older_stack_is_told_to_redeploy() {
        use clap::Parser;
        let cli = |args: &[&str]| {
            let mut argv = vec!["ocr-ctl"];
            argv.extend(args);
            argv.extend(["notifications", "status"]);
            Cli::try_parse_from(argv).unwrap()
        };
        let given = Target {
            url: Some("https://n.example/".into()),
        };
        let none = Target { url: None };
        assert_eq!(
            notifier_url(&cli(&[]), &given).unwrap().as_deref(),
            Some("https://n.example/")
        );
        let err = notifier_url(&cli(&[]), &none).unwrap_err().to_string();
        assert!(
            err.contains("--stack-name") && err.contains("--url"),
            "{err}"
        );
        let bad = Target {
            url: Some("n.example".into()),
        };
        assert!(notifier_url(&cli(&[]), &bad).is_err());

        let mut old = cli(&["--stack-name", "ocr"]);
        assert_eq!(notifier_url(&old, &none).unwrap(), None);
        let err = required(&old, None).unwrap_err().to_string();
        assert!(
            err.contains("\"ocr\" has no output NotifierUrl") && err.contains("deploy it again"),
            "{err}"
        );
        old.stack_notifier_url = Some("https://fn.lambda-url.eu-west-1.on.aws/".into());
        assert_eq!(
            notifier_url(&old, &none).unwrap().as_deref(),
            Some("https://fn.lambda-url.eu-west-1.on.aws/")
        );
    }

    #[test]
    fn status_tells_the_notifiers_triggers_from_other_urls() {
        let url = "https://n.lambda-url.eu-west-1.on.aws/";
        let all = [
            trigger("1", "https://n.lambda-url.eu-west-1.on.aws", "upload"),
            trigger("2", url, "delete"),
            trigger("3", "https://other.example/hook", "delete"),
            trigger("4", "https://audit.example/", "all"),
            trigger("5", url, "tags"),
        ];
        let s = NotificationStatus::new("cloud", Some(url), &all);
        let by = |e: &str| s.events.iter().find(|x| x.event_type == e).unwrap();
        assert!(by("upload").enabled, "a trailing slash is the same URL");
        assert_eq!(by("delete").trigger_id.as_deref(), Some("2"));
        assert_eq!(
            by("delete").other_urls,
            ["https://audit.example/", "https://other.example/hook"]
        );
        assert!(!by("rename").enabled);
        assert_eq!(by("move").other_urls, ["https://audit.example/"]);
        assert_eq!(s.other_events, [all[4].clone()]);
        let unset = NotificationStatus::new("cloud", None, &all);
        assert!(unset.events.iter().all(|e| !e.enabled));
    }
}

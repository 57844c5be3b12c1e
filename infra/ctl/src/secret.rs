//! `secret set`: `CLOUDINARY_URL` into the secret the functions read it from. The value comes
//! from standard input or a file, never from the command line, where it would stay in the
//! shell's history and show in the process list; it is checked before anything is written, and
//! neither an error nor the report ever shows it: only the cloud name and the API key, which
//! are not secret (the Cloudinary console shows both beside the URL).

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use shared::cloudinary::CloudinaryCredentials;
use shared::secret::Secret;

/// More than any `CLOUDINARY_URL`: input beyond it is not one.
pub const MAX_BYTES: u64 = 4096;

/// `CLOUDINARY_URL` as read from `input` (standard input or a file): at most [`MAX_BYTES`],
/// one line break at its end taken off (`\n` or `\r\n`, as `echo` and editors leave).
pub fn read_url(input: impl Read) -> anyhow::Result<Secret> {
    let mut raw = Vec::new();
    input
        .take(MAX_BYTES + 1)
        .read_to_end(&mut raw)
        .context("reading CLOUDINARY_URL")?;
    if raw.len() as u64 > MAX_BYTES {
        bail!("the input is longer than {MAX_BYTES} bytes: not a CLOUDINARY_URL");
    }
    let text = String::from_utf8(raw).map_err(|_| {
        anyhow::anyhow!(
            "the input is not UTF-8 text: not a CLOUDINARY_URL (the value is not shown)"
        )
    })?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(Secret::new(text))
}

/// Reads `CLOUDINARY_URL` from `path`, or from standard input when there is none. On a
/// terminal, what is typed is not shown.
pub fn read_input(path: Option<&Path>) -> anyhow::Result<Secret> {
    use std::io::IsTerminal;
    match path {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            read_url(file).with_context(|| format!("in {}", path.display()))
        }
        None if std::io::stdin().is_terminal() => {
            eprintln!(
                "CLOUDINARY_URL (cloudinary://API_KEY:API_SECRET@CLOUD_NAME; not shown as typed), then Enter and Ctrl-D:"
            );
            let _hidden = HiddenInput::start();
            let url = read_url(std::io::stdin().lock());
            eprintln!();
            url
        }
        None => read_url(std::io::stdin().lock()),
    }
}

/// Checks that `url` is `cloudinary://API_KEY:API_SECRET@CLOUD_NAME` as the functions read it,
/// with nothing around it. The errors say what is wrong, never the value.
pub fn check(url: &Secret) -> anyhow::Result<CloudinaryCredentials> {
    let raw = url.expose();
    if raw.is_empty() {
        bail!(
            "no CLOUDINARY_URL given: pipe it in (ocr-ctl secret set < FILE) or name a file with --from-file; nothing was stored"
        );
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "CLOUDINARY_URL holds a space, a tab, a line break or another control character (only one line break at its end is taken off); it must be the one line cloudinary://API_KEY:API_SECRET@CLOUD_NAME (the value is not shown); nothing was stored"
        );
    }
    CloudinaryCredentials::parse(url).map_err(|reason| {
        anyhow::anyhow!(
            "CLOUDINARY_URL is malformed: {reason} (the value is not shown); nothing was stored"
        )
    })
}

/// What `secret set` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub secret_arn: String,
    pub version_id: Option<String>,
    pub cloud_name: String,
    pub api_key: String,
}

/// Checks `url`, then stores it as the secret's new current value (PutSecretValue).
pub async fn set(
    sm: &aws_sdk_secretsmanager::Client,
    secret_arn: &str,
    url: &Secret,
) -> anyhow::Result<Stored> {
    let credentials = check(url)?;
    let put = sm
        .put_secret_value()
        .secret_id(secret_arn)
        .secret_string(url.expose())
        .send()
        .await
        .map_err(|e| {
            let e = e.into_service_error();
            let hint = if e.is_resource_not_found_exception() {
                " (no such secret: check --secret-arn or the stack's output CloudinarySecretArn)"
            } else {
                ""
            };
            anyhow::anyhow!("storing CLOUDINARY_URL in secret {secret_arn}{hint}: {e}")
        })?;
    Ok(Stored {
        secret_arn: put.arn().unwrap_or(secret_arn).to_string(),
        version_id: put.version_id().map(str::to_string),
        cloud_name: credentials.cloud_name,
        api_key: credentials.api_key,
    })
}

/// Standard input's echo turned off while it lives (a terminal's settings restored on drop).
struct HiddenInput(Option<libc::termios>);

impl HiddenInput {
    fn start() -> Self {
        // SAFETY: tcgetattr writes a termios for descriptor 0 into memory we own; on failure
        // nothing is changed and nothing is restored.
        let mut saved = unsafe { std::mem::zeroed::<libc::termios>() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Self(None);
        }
        let mut hidden = saved;
        hidden.c_lflag &= !libc::ECHO;
        // SAFETY: a termios read from this descriptor, with one flag cleared.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &hidden) } != 0 {
            return Self(None);
        }
        Self(Some(saved))
    }
}

impl Drop for HiddenInput {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: the settings this descriptor had before `start`.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "cloudinary://123456789012345:s3cr3t-Value_x@my-cloud";

    #[test]
    fn one_line_break_at_the_end_is_taken_off() {
        for input in [URL.to_string(), format!("{URL}\n"), format!("{URL}\r\n")] {
            assert_eq!(read_url(input.as_bytes()).unwrap().expose(), URL);
        }
        assert_eq!(
            read_url(format!("{URL}\n\n").as_bytes()).unwrap().expose(),
            format!("{URL}\n")
        );
    }

    #[test]
    fn a_well_formed_url_gives_its_cloud_name_and_api_key() {
        let c = check(&Secret::new(URL)).unwrap();
        assert_eq!(
            (
                c.cloud_name.as_str(),
                c.api_key.as_str(),
                c.api_secret.expose()
            ),
            ("my-cloud", "123456789012345", "s3cr3t-Value_x")
        );
    }

    #[test]
    fn a_malformed_value_is_refused_without_being_shown() {
        let secret = "s3cr3t-Value_x";
        for bad in [
            String::new(),
            format!("https://123:{secret}@my-cloud"),
            format!("CLOUDINARY_URL=cloudinary://123:{secret}@my-cloud"),
            format!("cloudinary://123:{secret}"),
            format!("cloudinary://{secret}@my-cloud"),
            format!("cloudinary://:{secret}@my-cloud"),
            format!("cloudinary://123:{secret}@"),
            format!("{URL}\n"),
            format!("{URL} "),
            format!(" {URL}"),
            format!("cloudinary://123:{secret}\t@my-cloud"),
            format!("cloudinary://123:{secret}@my-cloud\u{1b}[2J"),
            format!("{URL}\n{URL}"),
            "not set: put CLOUDINARY_URL here".to_string(),
        ] {
            let err = check(&Secret::new(bad.clone())).unwrap_err();
            let shown = format!("{err:#} {err:?}");
            assert!(!shown.contains(secret), "{bad:?}: {shown}");
            assert!(shown.contains("nothing was stored"), "{bad:?}: {shown}");
        }
    }

    #[test]
    fn input_that_cannot_be_a_url_is_refused_without_being_shown() {
        let long = format!("cloudinary://1:{}@c", "x".repeat(MAX_BYTES as usize));
        let err = read_url(long.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        assert!(!format!("{err:#}").contains("xxxx"));
        let err = read_url(&b"cloudinary://1:\xff\xfe@c"[..]).unwrap_err();
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}

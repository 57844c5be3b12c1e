//! Error classes: every error the pipeline meets knows how it should be handled.

use std::time::SystemTime;

/// How a failure is handled, decided where the error is made, never from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Timeouts, 5xx, AWS throttling: SQS retries it after the visibility timeout (or at the
    /// settle time, after an OCR request of its own that failed without an answer).
    Transient,
    /// Cloudinary's quota is spent: defer until it resets, without consuming the failure budget.
    RateLimited,
    /// 404, 400, malformed message, oversize key: record it and dead-letter it at once.
    Permanent,
}

impl ErrorClass {
    pub const ALL: [Self; 3] = [Self::Transient, Self::RateLimited, Self::Permanent];
}

/// An error that can tell its class and, when rate limited, when to try again.
pub trait Classified {
    fn class(&self) -> ErrorClass;
    /// When the quota resets, for rate-limited errors that know it.
    fn retry_at(&self) -> Option<SystemTime> {
        None
    }
    /// The service refused the credentials, or answered from an address that is not its own
    /// (a configuration fault: the secret is wrong or was rotated, or the API base is wrong),
    /// which operators are alarmed on and which makes a worker read the secret again.
    fn credentials_refused(&self) -> bool {
        false
    }
    /// The quota the refusing answer reported (Cloudinary's Admin API reports it on errors
    /// too), so that the gates learn from every answer.
    fn quota(&self) -> Option<crate::rate_gate::Quota> {
        None
    }
    /// The service turned the request down before doing anything (a 4xx other than a
    /// timeout, or a request never sent): nothing it would bill for ran.
    fn not_run(&self) -> bool {
        false
    }
}

/// A remote service's refusal or failure as the use cases see it: its class, when to try
/// again, and the whole chain in words. Adapters turn their own errors into it, so a port's
/// twin can fail exactly as the real service does without speaking its protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct RemoteError {
    pub class: ErrorClass,
    pub retry_at: Option<SystemTime>,
    pub reason: String,
    pub credentials_refused: bool,
    /// The service turned the request down before doing anything (a 4xx, or never sent): an
    /// OCR request refused so was not billed.
    pub not_run: bool,
    /// The quota the answer reported, if it came with one.
    pub quota: Option<crate::rate_gate::Quota>,
}

impl RemoteError {
    pub fn new(class: ErrorClass, reason: impl Into<String>) -> Self {
        Self {
            class,
            retry_at: None,
            reason: reason.into(),
            credentials_refused: false,
            not_run: false,
            quota: None,
        }
    }

    /// The same error, known to have been turned down before anything ran.
    pub fn not_run(self) -> Self {
        Self {
            not_run: true,
            ..self
        }
    }

    /// Keeps the class, the retry time and the chain of `err`.
    pub fn from_classified<E>(err: &E) -> Self
    where
        E: Classified + std::error::Error + 'static,
    {
        Self {
            class: err.class(),
            retry_at: err.retry_at(),
            reason: error_chain(err),
            credentials_refused: err.credentials_refused(),
            not_run: err.not_run(),
            quota: err.quota(),
        }
    }
}

impl Classified for RemoteError {
    fn class(&self) -> ErrorClass {
        self.class
    }
    fn retry_at(&self) -> Option<SystemTime> {
        self.retry_at
    }
    fn credentials_refused(&self) -> bool {
        self.credentials_refused
    }
    fn quota(&self) -> Option<crate::rate_gate::Quota> {
        self.quota
    }
    fn not_run(&self) -> bool {
        self.not_run
    }
}

/// The error and its sources, `outer: inner: innermost`, for reasons and log lines.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_lists_every_source() {
        let e = Outer(std::io::Error::other("inner cause"));
        assert_eq!(super::error_chain(&e), "outer: inner cause");
    }
}

//! Configuration read once at cold start from the environment.

use std::fmt;
use std::time::Duration;

use crate::cloudinary::settings::{
    CloudinaryConfig, CloudinaryCredentials, DEFAULT_API_BASE, OcrMethod, SignatureAlgorithm,
};
use crate::defaults;
use crate::scope::Scope;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
}

/// The worker's configuration.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub cloudinary: CloudinaryConfig,
    pub results_table: String,
    pub work_queue_url: String,
    /// Records of one batch processed at once.
    pub concurrency: usize,
    /// The work queue's `maxReceiveCount`: on the last receive a transient failure is recorded
    /// on the item as a failure for good, with its reason, before SQS moves the message.
    pub max_receive_count: u32,
    /// Worker instances that may run at once (the function's reserved concurrency), which
    /// share the Cloudinary quota.
    pub instances: u32,
    /// What may be spent on OCR requests.
    pub budget: crate::budget::Limits,
    /// Where the budget's counters are kept (required when a limit is set).
    pub checkpoint_table: Option<String>,
    /// The read-back queue (`READ_BACK_QUEUE_URL`): read-backs go there to be made many to a
    /// call; unset, each is made where it is met.
    pub read_back_queue_url: Option<String>,
}

/// The lister's configuration.
#[derive(Debug, Clone)]
pub struct ListerConfig {
    pub cloudinary: CloudinaryConfig,
    pub work_queue_url: String,
    pub checkpoint_table: String,
    /// Where an asset the work queue refuses is recorded failed.
    pub results_table: String,
    /// Assets per listing call (Cloudinary's maximum is 500).
    pub page_size: u32,
    /// A new pass this long after the previous one started.
    pub pass_interval: std::time::Duration,
    /// A full pass at least this often.
    pub full_pass_interval: std::time::Duration,
    /// An incremental pass starts this long before the previous pass started.
    pub incremental_overlap: std::time::Duration,
    /// What the passes list.
    pub scope: Scope,
    /// The OCR budget (nothing is listed while it is spent).
    pub budget: crate::budget::Limits,
}

/// The notifier function's configuration.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub settings: crate::notify::NotifierSettings,
    pub results_table: String,
    pub work_queue_url: String,
}

/// Reads variables through a function so tests need not touch the process environment.
pub struct Env<F: Fn(&str) -> Option<String>>(pub F);

impl Env<fn(&str) -> Option<String>> {
    pub fn process() -> Self {
        Env(|name| std::env::var(name).ok())
    }
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    fn parsed<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Malformed {
                    name,
                    reason: format!("{raw:?}: {e}"),
                }),
        }
    }

    /// `CLOUDINARY_URL` is resolved by the caller (environment locally, Secrets Manager in
    /// AWS) and handed in, so that the secret's origin stays out of this module.
    pub fn cloudinary(
        &self,
        cloudinary_url: Option<Secret>,
    ) -> Result<CloudinaryConfig, ConfigError> {
        let url = match cloudinary_url {
            Some(url) => url,
            None => Secret::new(self.required("CLOUDINARY_URL")?),
        };
        let credentials =
            CloudinaryCredentials::parse(&url).map_err(|reason| ConfigError::Malformed {
                name: "CLOUDINARY_URL",
                reason,
            })?;
        let api_base = self
            .get("CLOUDINARY_API_BASE")
            .unwrap_or_else(|| DEFAULT_API_BASE.to_string());
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(ConfigError::Malformed {
                name: "CLOUDINARY_API_BASE",
                reason: format!("{api_base:?} is not an http(s) URL"),
            });
        }
        let timeout_ms: u64 = self.parsed(
            "CLOUDINARY_TIMEOUT_MS",
            defaults::CLOUDINARY_TIMEOUT.as_millis() as u64,
        )?;
        let ocr_method = match self.get("OCR_METHOD") {
            None => OcrMethod::default(),
            Some(raw) => raw.parse().map_err(|reason| ConfigError::Malformed {
                name: "OCR_METHOD",
                reason,
            })?,
        };
        let signature_algorithm = match self.get("CLOUDINARY_SIGNATURE_ALGORITHM") {
            None => SignatureAlgorithm::default(),
            Some(raw) => raw.parse().map_err(|reason| ConfigError::Malformed {
                name: "CLOUDINARY_SIGNATURE_ALGORITHM",
                reason,
            })?,
        };
        Ok(CloudinaryConfig {
            credentials,
            api_base: api_base.trim_end_matches('/').to_string(),
            timeout: Duration::from_millis(timeout_ms),
            ocr_method,
            signature_algorithm,
            credentials_fault: None,
        })
    }

    pub fn worker(&self, cloudinary_url: Option<Secret>) -> Result<WorkerConfig, ConfigError> {
        let concurrency: usize = self.parsed("WORKER_CONCURRENCY", defaults::RECORDS_IN_FLIGHT)?;
        if concurrency == 0 {
            return Err(ConfigError::Malformed {
                name: "WORKER_CONCURRENCY",
                reason: "must be at least 1".into(),
            });
        }
        Ok(WorkerConfig {
            cloudinary: self.cloudinary(cloudinary_url)?,
            results_table: self.required("RESULTS_TABLE")?,
            work_queue_url: self.required("WORK_QUEUE_URL")?,
            concurrency,
            max_receive_count: self.parsed("MAX_RECEIVE_COUNT", defaults::MAX_RECEIVE_COUNT)?,
            instances: self.parsed::<u32>("WORKER_INSTANCES", 1)?.max(1),
            budget: self.budget()?,
            checkpoint_table: self.get("CHECKPOINT_TABLE"),
            read_back_queue_url: self.get("READ_BACK_QUEUE_URL"),
        })
        .and_then(|c| {
            if c.budget.any() && c.checkpoint_table.is_none() {
                return Err(ConfigError::Missing("CHECKPOINT_TABLE"));
            }
            Ok(c)
        })
    }

    /// The OCR budget: `MAX_OCR_PER_DAY`, `MAX_OCR_PER_MONTH` (0 or unset: none) and
    /// `ADDON_LIMIT_MARGIN` (OCRs kept below the add-on's monthly limit; unset or -1: the
    /// limit is not watched).
    pub fn budget(&self) -> Result<crate::budget::Limits, ConfigError> {
        let margin: i64 = self.parsed("ADDON_LIMIT_MARGIN", -1)?;
        Ok(crate::budget::Limits {
            per_day: self.parsed("MAX_OCR_PER_DAY", 0)?,
            per_month: self.parsed("MAX_OCR_PER_MONTH", 0)?,
            addon_margin: u64::try_from(margin).ok(),
        })
    }

    /// The worker's configuration, also when `CLOUDINARY_URL` is missing or malformed: then it
    /// carries the fault (see [`CloudinaryConfig::credentials_fault`]) and placeholder
    /// credentials, so that the worker starts, dead-letters nothing, and says why on every
    /// call until the secret is fixed. Any other variable's fault still fails the start.
    pub fn worker_waiting_on_secret(
        &self,
        cloudinary_url: Option<Secret>,
    ) -> Result<WorkerConfig, ConfigError> {
        let fault = match self.worker(cloudinary_url) {
            Err(ConfigError::Malformed {
                name: "CLOUDINARY_URL",
                reason,
            }) => format!("CLOUDINARY_URL is malformed: {reason}"),
            Err(ConfigError::Missing("CLOUDINARY_URL")) => "CLOUDINARY_URL is not set".to_string(),
            other => return other,
        };
        let placeholder = Secret::new("cloudinary://unset:unset@unset".to_string());
        let mut config = self.worker(Some(placeholder))?;
        config.cloudinary.credentials_fault = Some(fault);
        Ok(config)
    }

    /// The scope, from `SCOPE_PREFIXES`, `SCOPE_TAGS`, `SCOPE_DELIVERY_TYPES`, `SCOPE_FORMATS`
    /// (comma-separated) and `SCOPE_EXPRESSION` (a Search expression); none set: the whole
    /// account.
    pub fn scope(&self) -> Result<Scope, ConfigError> {
        let get = |name: &'static str| self.get(name).unwrap_or_default();
        Scope::parse(
            &get("SCOPE_PREFIXES"),
            &get("SCOPE_TAGS"),
            &get("SCOPE_EXPRESSION"),
            &get("SCOPE_DELIVERY_TYPES"),
            &get("SCOPE_FORMATS"),
        )
        .map_err(|e| ConfigError::Malformed {
            name: "SCOPE_*",
            reason: e.0,
        })
    }

    /// The notifier's configuration: the account's secret and signature algorithm verify
    /// each notification; `NOTIFICATION_MAX_AGE_SECONDS` (7200, Cloudinary's SDKs' own) and
    /// `KEEP_DELETED_TEXT` (`true`) tune it; the scope is the lister's.
    pub fn notifier(&self, cloudinary_url: Option<Secret>) -> Result<NotifierConfig, ConfigError> {
        let cloudinary = self.cloudinary(cloudinary_url)?;
        let mut settings = crate::notify::NotifierSettings::new(
            cloudinary.credentials.api_secret.clone(),
            cloudinary.signature_algorithm,
            self.scope()?,
        );
        let max_age: u64 = self.parsed(
            "NOTIFICATION_MAX_AGE_SECONDS",
            crate::notify::DEFAULT_MAX_AGE.as_secs(),
        )?;
        if max_age == 0 {
            return Err(ConfigError::Malformed {
                name: "NOTIFICATION_MAX_AGE_SECONDS",
                reason: "must be at least 1".into(),
            });
        }
        settings.max_age = Duration::from_secs(max_age);
        settings.keep_deleted_text = self.parsed("KEEP_DELETED_TEXT", true)?;
        Ok(NotifierConfig {
            settings,
            results_table: self.required("RESULTS_TABLE")?,
            work_queue_url: self.required("WORK_QUEUE_URL")?,
        })
    }

    pub fn lister(&self, cloudinary_url: Option<Secret>) -> Result<ListerConfig, ConfigError> {
        let page_size: u32 = self.parsed("LISTER_PAGE_SIZE", defaults::PAGE_SIZE)?;
        if !(1..=defaults::MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ConfigError::Malformed {
                name: "LISTER_PAGE_SIZE",
                reason: format!("{page_size} is outside 1..={}", defaults::MAX_PAGE_SIZE),
            });
        }
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Ok(ListerConfig {
            cloudinary: self.cloudinary(cloudinary_url)?,
            work_queue_url: self.required("WORK_QUEUE_URL")?,
            checkpoint_table: self.required("CHECKPOINT_TABLE")?,
            results_table: self.required("RESULTS_TABLE")?,
            page_size,
            pass_interval: hours(self.parsed(
                "LISTER_PASS_INTERVAL_HOURS",
                defaults::PASS_INTERVAL.as_secs() / 3600,
            )?),
            full_pass_interval: hours(
                24 * self.parsed(
                    "LISTER_FULL_PASS_INTERVAL_DAYS",
                    defaults::FULL_PASS_INTERVAL.as_secs() / 86_400,
                )?,
            ),
            incremental_overlap: Duration::from_secs(
                60 * self.parsed(
                    "LISTER_OVERLAP_MINUTES",
                    defaults::INCREMENTAL_OVERLAP.as_secs() / 60,
                )?,
            ),
            scope: self.scope()?,
            budget: self.budget()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env(move |name: &str| map.get(name).cloned())
    }

    const URL: &str = "cloudinary://1234:s3cr3t-value@demo";

    #[test]
    fn worker_config_reads_every_variable_and_defaults() {
        let cfg = env(&[
            ("CLOUDINARY_URL", URL),
            ("RESULTS_TABLE", "results"),
            ("WORK_QUEUE_URL", "http://q/work"),
        ])
        .worker(None)
        .unwrap();
        assert_eq!(cfg.results_table, "results");
        assert_eq!(cfg.concurrency, defaults::RECORDS_IN_FLIGHT);
        assert_eq!(cfg.max_receive_count, defaults::MAX_RECEIVE_COUNT);
        assert_eq!(cfg.instances, 1);
        assert_eq!(cfg.cloudinary.api_base, DEFAULT_API_BASE);
        assert_eq!(cfg.cloudinary.credentials.cloud_name, "demo");
        assert_eq!(cfg.cloudinary.ocr_method, OcrMethod::Explicit);
    }

    #[test]
    fn missing_and_malformed_variables_are_named() {
        let err = env(&[("CLOUDINARY_URL", URL)]).worker(None).unwrap_err();
        assert_eq!(err, ConfigError::Missing("RESULTS_TABLE"));
        let err = env(&[
            ("CLOUDINARY_URL", URL),
            ("RESULTS_TABLE", "t"),
            ("WORK_QUEUE_URL", "q"),
            ("WORKER_CONCURRENCY", "many"),
        ])
        .worker(None)
        .unwrap_err();
        assert!(err.to_string().contains("WORKER_CONCURRENCY"), "{err}");
        let err = env(&[("CLOUDINARY_URL", "https://demo")])
            .cloudinary(None)
            .unwrap_err();
        assert!(err.to_string().contains("CLOUDINARY_URL"), "{err}");
        let err = env(&[("CLOUDINARY_URL", URL), ("OCR_METHOD", "magic")])
            .cloudinary(None)
            .unwrap_err();
        assert!(err.to_string().contains("OCR_METHOD"), "{err}");
        let err = env(&[
            ("CLOUDINARY_URL", URL),
            ("WORK_QUEUE_URL", "q"),
            ("CHECKPOINT_TABLE", "c"),
            ("LISTER_PAGE_SIZE", "501"),
        ])
        .lister(None)
        .unwrap_err();
        assert!(err.to_string().contains("LISTER_PAGE_SIZE"), "{err}");
        let err = env(&[
            ("CLOUDINARY_URL", URL),
            ("WORK_QUEUE_URL", "q"),
            ("CHECKPOINT_TABLE", "c"),
        ])
        .lister(None)
        .unwrap_err();
        assert_eq!(err, ConfigError::Missing("RESULTS_TABLE"));
    }

    #[test]
    fn the_scope_is_read_from_its_variables_and_a_bad_one_named() {
        let base = [
            ("CLOUDINARY_URL", URL),
            ("WORK_QUEUE_URL", "q"),
            ("CHECKPOINT_TABLE", "c"),
            ("RESULTS_TABLE", "r"),
        ];
        assert!(env(&base).lister(None).unwrap().scope.is_whole_account());
        let mut vars = base.to_vec();
        vars.extend([
            ("SCOPE_PREFIXES", "invoices/, receipts/"),
            ("SCOPE_TAGS", "paid"),
            ("SCOPE_EXPRESSION", "bytes>10000"),
            ("SCOPE_DELIVERY_TYPES", "upload"),
            ("SCOPE_FORMATS", "PNG"),
        ]);
        let scope = env(&vars).lister(None).unwrap().scope;
        assert_eq!(scope.prefixes, ["invoices/", "receipts/"]);
        assert_eq!(scope.tags, ["paid"]);
        assert_eq!(scope.expression.as_deref(), Some("bytes>10000"));
        assert_eq!(scope.delivery_types, ["upload"]);
        assert_eq!(scope.formats, ["png"]);
        let mut bad = base.to_vec();
        bad.push(("SCOPE_DELIVERY_TYPES", "upload,youtube"));
        let err = env(&bad).lister(None).unwrap_err();
        assert!(err.to_string().contains("SCOPE_*"), "{err}");
        assert!(err.to_string().contains("youtube"), "{err}");
    }

    #[test]
    fn the_budget_is_read_and_needs_the_checkpoint_table() {
        let base = [
            ("CLOUDINARY_URL", URL),
            ("RESULTS_TABLE", "r"),
            ("WORK_QUEUE_URL", "q"),
        ];
        let none = env(&base).worker(None).unwrap();
        assert!(!none.budget.any());
        let mut vars = base.to_vec();
        vars.extend([("MAX_OCR_PER_DAY", "500"), ("ADDON_LIMIT_MARGIN", "100")]);
        assert_eq!(
            env(&vars).worker(None).unwrap_err(),
            ConfigError::Missing("CHECKPOINT_TABLE")
        );
        vars.push(("CHECKPOINT_TABLE", "c"));
        let cfg = env(&vars).worker(None).unwrap();
        assert_eq!(
            cfg.budget,
            crate::budget::Limits {
                per_day: 500,
                per_month: 0,
                addon_margin: Some(100)
            }
        );
        vars.push(("MAX_OCR_PER_MONTH", "-3"));
        let err = env(&vars).worker(None).unwrap_err();
        assert!(err.to_string().contains("MAX_OCR_PER_MONTH"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let cfg = env(&[("CLOUDINARY_URL", URL)]).cloudinary(None).unwrap();
        let shown = format!(
            "{cfg:?} {:?} {}",
            Secret::new("x-secret"),
            Secret::new("x-secret")
        );
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("x-secret"), "{shown}");
        assert!(shown.contains("***"));
    }
}

use super::*;

pub(crate) struct Ctx {
    pub(crate) root: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) python: PathBuf,
    pub(crate) endpoint: String,
    pub(crate) sdk: aws_config::SdkConfig,
    pub(crate) ddb: aws_sdk_dynamodb::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) http: reqwest::Client,
    pub(crate) settings: StackSettings,
    pub(crate) template: Template,
}

impl Ctx {
    /// Records an invocation gets here: one receive of the local event-source loop, within the
    /// batch size (Lambda's pollers gather the whole batch size across receives).
    pub(crate) fn local_batch(&self) -> usize {
        (self.settings.batch_size as usize).clamp(1, local_stack::runner::RECEIVE_MAX)
    }

    /// Records in flight per invocation here: the worker's, within that batch.
    pub(crate) fn records_in_flight(&self) -> usize {
        shared::defaults::RECORDS_IN_FLIGHT.min(self.local_batch())
    }

    /// A stack whose functions use the emulator process.
    pub(crate) async fn scenario(
        &self,
        prefix: &str,
        emu: &EmulatorProcess,
    ) -> anyhow::Result<Scenario> {
        let mut scenario = Scenario::provision(&self.sdk, prefix, self.settings.clone()).await?;
        scenario.use_cloudinary(emu.cloudinary_url.clone(), emu.base_url.clone());
        Ok(scenario)
    }

    pub(crate) async fn stack(&self, prefix: &str) -> anyhow::Result<LocalStack> {
        provision(
            &self.ddb,
            &self.sqs,
            StackNames::unique(prefix),
            self.settings.clone(),
        )
        .await
    }

    /// moto's request counts by operation; `reset` clears them after reading.
    pub(crate) async fn aws_requests(&self, reset: bool) -> anyhow::Result<BTreeMap<String, u64>> {
        let url = format!("{}/_requests", self.endpoint);
        let req = if reset {
            self.http.delete(&url)
        } else {
            self.http.get(&url)
        };
        let counts: BTreeMap<String, u64> = req
            .send()
            .await
            .context("asking moto for its request counts")?
            .error_for_status()?
            .json()
            .await
            .context("moto's request counts (is infra/scripts/moto_server.py serving?)")?;
        Ok(counts.into_iter().filter(|(k, _)| k != "other").collect())
    }
}

/// The Cloudinary emulator as a process of its own (its CPU is not the pipeline's).
pub(crate) struct EmulatorProcess {
    pub(crate) child: tokio::process::Child,
    pub(crate) base_url: String,
    pub(crate) cloudinary_url: String,
    pub(crate) http: reqwest::Client,
}

#[derive(Default)]
pub(crate) struct EmulatorOptions {
    pub(crate) assets: usize,
    pub(crate) latency_ms: u64,
    pub(crate) admin_limit: Option<u64>,
    pub(crate) admin_window_secs: Option<u64>,
}

impl EmulatorProcess {
    pub(crate) async fn start(ctx: &Ctx, o: EmulatorOptions) -> anyhow::Result<Self> {
        let path = ctx.bin_dir.join("cloudinary-emulator");
        let mut cmd = tokio::process::Command::new(&path);
        // Upload images only: the blog-style baseline lists nothing else, and the scenarios
        // compare like with like.
        cmd.arg("--generate")
            .arg(o.assets.to_string())
            .arg("--uploads-only")
            .arg("--latency-ms")
            .arg(o.latency_ms.to_string())
            .arg("--cloud-name")
            .arg("bench");
        if let Some(l) = o.admin_limit {
            cmd.arg("--admin-limit").arg(l.to_string());
        }
        if let Some(w) = o.admin_window_secs {
            cmd.arg("--admin-window-secs").arg(w.to_string());
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let stdout = child.stdout.take().context("the emulator's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let (mut base_url, mut cloudinary_url) = (None, None);
        while base_url.is_none() || cloudinary_url.is_none() {
            let Some(line) = lines.next_line().await? else {
                bail!("the emulator exited before it was ready");
            };
            if let Some(v) = line.strip_prefix("CLOUDINARY_API_BASE=") {
                base_url = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("CLOUDINARY_URL=") {
                cloudinary_url = Some(v.to_string());
            }
        }
        // Keep reading so that the emulator never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            base_url: base_url.unwrap_or_default(),
            cloudinary_url: cloudinary_url.unwrap_or_default(),
            http: ctx.http.clone(),
        })
    }

    pub(crate) async fn stats(&self) -> anyhow::Result<Stats> {
        self.http
            .get(format!("{}/_emulator/stats", self.base_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .context("the emulator's stats")
    }

    pub(crate) async fn stop(mut self) {
        let _already_gone = self.child.kill().await;
    }
}

/// CPU seconds moto (the local AWS) has used so far, read from /proc; `NAN` if unknown.
pub(crate) fn moto_cpu_seconds(ctx: &Ctx) -> f64 {
    let pid = std::fs::read_to_string(ctx.root.join(".local/moto.pid")).unwrap_or_default();
    pid.trim()
        .parse()
        .ok()
        .and_then(local_stack::runtime_api::cpu_time)
        .map_or(f64::NAN, |t| t.as_secs_f64())
}

/// CPU seconds (user + system) this process has used so far.
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

//! A minimal Lambda Runtime API, served here, that hands events to a real `bootstrap` process
//! one at a time and collects its answers: the binary that ships, run as Lambda runs it. Used
//! by the Runtime API tests and by `make bench` (start-up time, memory, the worker's own CPU).

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};

#[derive(Default)]
struct Runtime {
    events: Mutex<VecDeque<(String, String)>>,
    answers: Mutex<HashMap<String, Result<String, String>>>,
    init_error: Mutex<Option<String>>,
    first_poll: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn next(State(rt): State<Arc<Runtime>>) -> (HeaderMap, String) {
    lock(&rt.first_poll).get_or_insert_with(Instant::now);
    loop {
        let event = lock(&rt.events).pop_front();
        if let Some((id, body)) = event {
            // The worker's timeout, as Lambda would hand it (a record is only started with
            // the Cloudinary timeout and some slack left).
            let deadline = SystemTime::now() + shared::defaults::WORKER_TIMEOUT;
            let ms = deadline
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let mut h = HeaderMap::new();
            h.insert("lambda-runtime-aws-request-id", header(&id));
            h.insert("lambda-runtime-deadline-ms", header(&ms.to_string()));
            h.insert(
                "lambda-runtime-invoked-function-arn",
                header("arn:aws:lambda:us-east-1:123456789012:function:local"),
            );
            h.insert(
                "lambda-runtime-trace-id",
                header(
                    "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                ),
            );
            return (h, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn response(
    State(rt): State<Arc<Runtime>>,
    Path(id): Path<String>,
    body: String,
) -> &'static str {
    lock(&rt.answers).insert(id, Ok(body));
    "{}"
}

async fn error(
    State(rt): State<Arc<Runtime>>,
    Path(id): Path<String>,
    body: String,
) -> &'static str {
    lock(&rt.answers).insert(id, Err(body));
    "{}"
}

async fn init_error(State(rt): State<Arc<Runtime>>, body: String) -> &'static str {
    *lock(&rt.init_error) = Some(body);
    "{}"
}

/// What one run of a `bootstrap` did.
#[derive(Debug)]
pub struct Invocation {
    /// The invocation's answer (`Err` for an invocation or init error); `None` when the
    /// process exited or timed out without answering.
    pub answer: Option<Result<String, String>>,
    /// From exec to the first poll of the Runtime API (the cold start's init phase).
    pub init: Duration,
    /// Peak resident memory of the process after the invocation (`VmHWM`), in KiB.
    pub peak_rss_kib: Option<u64>,
    /// Everything the process wrote (stdout, then stderr).
    pub output: String,
}

/// What one run of a `bootstrap` over several events did.
#[derive(Debug)]
pub struct Invocations {
    /// Each event's answer, in order (`None`: not answered before the process exited or the
    /// time ran out).
    pub answers: Vec<Option<Result<String, String>>>,
    pub init: Duration,
    pub peak_rss_kib: Option<u64>,
    /// CPU time (user and system) the process had used when the last answer came.
    pub cpu: Option<Duration>,
    pub output: String,
}

/// Starts `command` as Lambda would (Runtime API address, function variables, `env`), serves
/// it `event`, waits up to `timeout` for the answer, then stops the process.
pub async fn invoke_bootstrap(
    command: tokio::process::Command,
    function_name: &str,
    env: &[(String, String)],
    event: String,
    timeout: Duration,
) -> anyhow::Result<Invocation> {
    let run = invoke_bootstrap_events(command, function_name, env, vec![event], timeout).await?;
    Ok(Invocation {
        answer: run.answers.into_iter().next().flatten(),
        init: run.init,
        peak_rss_kib: run.peak_rss_kib,
        output: run.output,
    })
}

/// Starts `command` as [`invoke_bootstrap`] does and serves it every event in turn (one warm
/// process, as Lambda reuses an instance), up to `timeout` for all of them.
pub async fn invoke_bootstrap_events(
    mut command: tokio::process::Command,
    function_name: &str,
    env: &[(String, String)],
    events: Vec<String>,
    timeout: Duration,
) -> anyhow::Result<Invocations> {
    let rt = Arc::new(Runtime::default());
    let ids: Vec<String> = (1..=events.len()).map(|i| format!("req-{i}")).collect();
    lock(&rt.events).extend(ids.iter().cloned().zip(events));
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(rt.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the Runtime API")?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    let mut child = command
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "stream")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "group")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the bootstrap")?;
    // Read as it is written: a pipe nobody reads fills up and blocks the process's logging.
    let stdout = drain_pipe(child.stdout.take());
    let stderr = drain_pipe(child.stderr.take());
    let mut answers: Vec<Option<Result<String, String>>> = vec![None; ids.len()];
    let mut peak_rss_kib = None;
    let mut cpu = None;
    while started.elapsed() < timeout {
        let all = {
            let mut got = lock(&rt.answers);
            for (id, answer) in ids.iter().zip(answers.iter_mut()) {
                if answer.is_none() {
                    *answer = got.remove(id);
                }
            }
            answers.iter().all(Option::is_some)
        };
        if all {
            peak_rss_kib = child.id().and_then(peak_rss);
            cpu = child.id().and_then(cpu_time);
            break;
        }
        if let Some(e) = lock(&rt.init_error).clone() {
            answers[0] = Some(Err(format!("init error: {e}")));
            break;
        }
        if let Ok(Some(_exited)) = child.try_wait() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let init = lock(&rt.first_poll)
        .map(|t| t - started)
        .unwrap_or_default();
    // Already exited is fine: the output is what matters.
    let _exited_already = child.start_kill();
    child
        .wait()
        .await
        .context("waiting for the bootstrap to end")?;
    server.abort();
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    Ok(Invocations {
        answers,
        init,
        peak_rss_kib,
        cpu,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    })
}

/// Reads a child's pipe to its end in a task of its own; the bytes read.
fn drain_pipe(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            use tokio::io::AsyncReadExt;
            // A read error ends the output early; what was read is kept.
            let _partial = pipe.read_to_end(&mut bytes).await;
        }
        bytes
    })
}

/// User and system CPU time of a live process (Linux: `/proc/PID/stat`, in clock ticks).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: the fields after it are counted.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// `VmHWM` of a live process, in KiB (Linux).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

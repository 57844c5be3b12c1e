//! The notifier served locally: an HTTP server on 127.0.0.1 that hands every request to
//! [`notifier::answer`], the handler the Lambda Function URL runs, and keeps what each request
//! was answered (for the demo's summary, the chaos run's checks and the tests).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use shared::notify::{Notifier, Outcome};
use shared::queue::WorkQueue;
use shared::store::NotifyStore;

/// One request the local notifier answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub at: Instant,
    pub status: u16,
    /// The answer's body (`{"result": ...}`).
    pub body: String,
    pub outcome: Outcome,
}

/// A running local notifier; stops when dropped.
pub struct LocalNotifier {
    /// The URL Cloudinary (the emulator) is to notify.
    pub url: String,
    answered: Arc<Mutex<Vec<Answered>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalNotifier {
    /// Every request answered so far, in order.
    pub fn answered(&self) -> Vec<Answered> {
        self.answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests answered with each status.
    pub fn statuses(&self) -> std::collections::BTreeMap<u16, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for a in self.answered() {
            *counts.entry(a.status).or_default() += 1;
        }
        counts
    }
}

impl Drop for LocalNotifier {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _server_may_have_stopped = tx.send(());
        }
    }
}

struct Served<S, Q> {
    notifier: Notifier<S, Q>,
    answered: Arc<Mutex<Vec<Answered>>>,
}

/// Serves `notifier` on an ephemeral port of 127.0.0.1, every path and method (the handler
/// refuses what is not a POST, as behind the Function URL).
pub async fn serve<S, Q>(notifier: Notifier<S, Q>) -> anyhow::Result<LocalNotifier>
where
    S: NotifyStore + 'static,
    Q: WorkQueue + 'static,
{
    let answered = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::new(Served {
        notifier,
        answered: answered.clone(),
    });
    // The handler's own limit answers 413; the server's must not answer first.
    let app = axum::Router::new()
        .fallback(handle::<S, Q>)
        .layer(axum::extract::DefaultBodyLimit::max(8 << 20))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _server_ended = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _either_way = rx.await;
            })
            .await;
    });
    Ok(LocalNotifier {
        url: format!("http://{addr}/"),
        answered,
        shutdown: Some(tx),
    })
}

async fn handle<S, Q>(
    State(state): State<Arc<Served<S, Q>>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String)
where
    S: NotifyStore + 'static,
    Q: WorkQueue + 'static,
{
    let (status, answer, outcome) = notifier::answer(
        &state.notifier,
        method.as_str(),
        &headers,
        &body,
        SystemTime::now(),
    )
    .await;
    state
        .answered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Answered {
            at: Instant::now(),
            status,
            body: answer.clone(),
            outcome,
        });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        answer,
    )
}

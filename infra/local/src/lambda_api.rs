//! The slice of Lambda's control plane that `ocr-ctl pause` and `resume` use, over the local
//! runner's event source mapping: list, read and update a mapping, and a function's timeout.
//! moto cannot serve this slice here: a mapping enabled on moto's queue makes moto itself
//! receive the messages and invoke a function it cannot run. Paths and shapes are Lambda's
//! REST API (`/2015-03-31/...`); the SDK is pointed at it with `AWS_ENDPOINT_URL_LAMBDA`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// One event source mapping: its switch is what the local runner reads before each poll.
#[derive(Debug, Clone)]
pub struct LocalMapping {
    pub uuid: String,
    pub function_name: String,
    pub queue_arn: String,
    /// The function's timeout, in seconds (what `pause` waits for batches in flight).
    pub timeout_secs: u64,
    pub enabled: Arc<AtomicBool>,
}

impl LocalMapping {
    pub fn new(function_name: &str, queue_arn: &str, timeout_secs: u64) -> Self {
        Self {
            uuid: uuid::Uuid::new_v4().to_string(),
            function_name: function_name.to_string(),
            queue_arn: queue_arn.to_string(),
            timeout_secs,
            enabled: Arc::new(AtomicBool::new(true)),
        }
    }

    fn json(&self) -> Value {
        let enabled = self.enabled.load(Ordering::SeqCst);
        json!({
            "UUID": self.uuid,
            "EventSourceArn": self.queue_arn,
            "FunctionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{}", self.function_name),
            "State": if enabled { "Enabled" } else { "Disabled" },
            "BatchSize": 10,
            "LastModified": 1.7e9,
        })
    }
}

fn not_found(
    what: &str,
) -> (
    axum::http::StatusCode,
    [(&'static str, &'static str); 1],
    Json<Value>,
) {
    (
        axum::http::StatusCode::NOT_FOUND,
        [("x-amzn-errortype", "ResourceNotFoundException")],
        Json(json!({"Type": "User", "message": format!("{what} not found")})),
    )
}

/// Serves the mapping on a free loopback port; the address to point the SDK at.
pub async fn serve(mapping: LocalMapping) -> anyhow::Result<SocketAddr> {
    let state = Arc::new(mapping);
    let app = Router::new()
        .route(
            "/2015-03-31/event-source-mappings",
            get(
                |State(m): State<Arc<LocalMapping>>,
                 axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move {
                    let wanted = q.get("FunctionName").map(String::as_str);
                    let listed: Vec<Value> = match wanted {
                        Some(f)
                            if f != m.function_name
                                && !f.ends_with(&format!(":{}", m.function_name)) =>
                        {
                            vec![]
                        }
                        _ => vec![m.json()],
                    };
                    Json(json!({"EventSourceMappings": listed}))
                },
            ),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(
                |State(m): State<Arc<LocalMapping>>, Path(uuid): Path<String>| async move {
                    if uuid != m.uuid {
                        return Err(not_found("event source mapping"));
                    }
                    Ok(Json(m.json()))
                },
            )
            .put(
                |State(m): State<Arc<LocalMapping>>,
                 Path(uuid): Path<String>,
                 Json(body): Json<Value>| async move {
                    if uuid != m.uuid {
                        return Err(not_found("event source mapping"));
                    }
                    if let Some(enabled) = body.get("Enabled").and_then(Value::as_bool) {
                        m.enabled.store(enabled, Ordering::SeqCst);
                    }
                    Ok(Json(m.json()))
                },
            ),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(
                |State(m): State<Arc<LocalMapping>>, Path(name): Path<String>| async move {
                    if name != m.function_name {
                        return Err(not_found("function"));
                    }
                    Ok(Json(
                        json!({"FunctionName": m.function_name, "Timeout": m.timeout_secs}),
                    ))
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _server_ends_with_the_process = axum::serve(listener, app).await;
    });
    Ok(addr)
}

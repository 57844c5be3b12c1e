//! `pause` and `resume`: the worker's event source mapping and the lister's schedule disabled
//! (or enabled again). While paused nothing is listed and nothing is paid; the messages wait in
//! the work queue (SQS keeps them for the queue's retention period, 14 days by default here).

use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_lambda::types::EventSourceMappingConfiguration;
use serde::Serialize;

/// What pausing acts on.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The worker function, whose SQS event source mappings are disabled.
    pub worker_function: String,
    /// The lister's EventBridge Scheduler schedule, if known.
    pub schedule: Option<String>,
}

/// Whether the pipeline runs: its mappings' and schedule's states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseState {
    /// Each event source mapping's state (`Enabled`, `Disabling`, `Disabled`, ...).
    pub mappings: Vec<(String, String)>,
    /// The schedule's state (`ENABLED`, `DISABLED`), if there is one.
    pub schedule: Option<String>,
}

impl PauseState {
    /// Paused: no mapping polls the queue (and the schedule, if any, is off).
    pub fn paused(&self) -> bool {
        !self.mappings.is_empty()
            && self.mappings.iter().all(|(_, s)| s == "Disabled")
            && self.schedule.as_deref().is_none_or(|s| s == "DISABLED")
    }

    pub fn describe(&self) -> String {
        let mappings: Vec<String> = self
            .mappings
            .iter()
            .map(|(uuid, state)| format!("mapping {uuid} {}", state.to_lowercase()))
            .collect();
        let schedule = self
            .schedule
            .as_deref()
            .map(|s| format!(", schedule {}", s.to_lowercase()))
            .unwrap_or_default();
        let running = self.mappings.iter().all(|(_, s)| s == "Enabled")
            && self.schedule.as_deref().is_none_or(|s| s == "ENABLED");
        let verdict = if self.paused() {
            "paused"
        } else if running {
            "running"
        } else {
            "partly paused"
        };
        format!("{verdict} ({}{schedule})", mappings.join(", "))
    }
}

async fn mappings(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> anyhow::Result<Vec<EventSourceMappingConfiguration>> {
    let mut all = Vec::new();
    let mut marker = None;
    loop {
        let out = lambda
            .list_event_source_mappings()
            .function_name(function)
            .set_marker(marker)
            .send()
            .await
            .with_context(|| format!("listing the event source mappings of {function}"))?;
        all.extend(
            out.event_source_mappings()
                .iter()
                .filter(|m| m.event_source_arn().is_some_and(|a| a.contains(":sqs:")))
                .cloned(),
        );
        marker = out.next_marker().map(str::to_string);
        if marker.is_none() {
            break;
        }
    }
    if all.is_empty() {
        bail!("{function} has no SQS event source mapping: is it the stack's worker function?");
    }
    Ok(all)
}

async fn schedule_state(
    scheduler: &aws_sdk_scheduler::Client,
    name: &str,
) -> anyhow::Result<String> {
    let s = scheduler
        .get_schedule()
        .name(name)
        .send()
        .await
        .with_context(|| format!("reading the schedule {name}"))?;
    Ok(s.state()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default())
}

/// The pipeline's state now.
pub async fn state(
    lambda: &aws_sdk_lambda::Client,
    scheduler: &aws_sdk_scheduler::Client,
    targets: &Targets,
) -> anyhow::Result<PauseState> {
    let mappings = mappings(lambda, &targets.worker_function)
        .await?
        .iter()
        .map(|m| {
            (
                m.uuid().unwrap_or_default().to_string(),
                m.state().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let schedule = match &targets.schedule {
        Some(name) => Some(schedule_state(scheduler, name).await?),
        None => None,
    };
    Ok(PauseState { mappings, schedule })
}

/// Sets the schedule's state, keeping everything else it has (UpdateSchedule replaces the
/// whole schedule).
async fn set_schedule(
    scheduler: &aws_sdk_scheduler::Client,
    name: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    use aws_sdk_scheduler::types::ScheduleState;
    let s = scheduler
        .get_schedule()
        .name(name)
        .send()
        .await
        .with_context(|| format!("reading the schedule {name}"))?;
    let state = if enabled {
        ScheduleState::Enabled
    } else {
        ScheduleState::Disabled
    };
    scheduler
        .update_schedule()
        .name(name)
        .set_group_name(s.group_name().map(str::to_string))
        .set_schedule_expression(s.schedule_expression().map(str::to_string))
        .set_schedule_expression_timezone(s.schedule_expression_timezone().map(str::to_string))
        .set_start_date(s.start_date().cloned())
        .set_end_date(s.end_date().cloned())
        .set_description(s.description().map(str::to_string))
        .set_flexible_time_window(s.flexible_time_window().cloned())
        .set_target(s.target().cloned())
        .set_kms_key_arn(s.kms_key_arn().map(str::to_string))
        .set_action_after_completion(s.action_after_completion().cloned())
        .state(state)
        .send()
        .await
        .with_context(|| format!("updating the schedule {name}"))?;
    Ok(())
}

/// Enables or disables one event source mapping.
async fn set_mapping(
    lambda: &aws_sdk_lambda::Client,
    uuid: &str,
    enabled: bool,
) -> anyhow::Result<()> {
    lambda
        .update_event_source_mapping()
        .uuid(uuid)
        .enabled(enabled)
        .send()
        .await
        .with_context(|| {
            let verb = if enabled { "enabling" } else { "disabling" };
            format!("{verb} the event source mapping {uuid}")
        })?;
    Ok(())
}

/// How `pause` waits for what is in flight.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// Between two reads of a mapping's state.
    pub poll: Duration,
    /// The longest a mapping may take to be disabled.
    pub disable: Duration,
    /// Whether to wait, once disabled, for the invocations in flight to end (the function's
    /// timeout): only then is nothing more paid.
    pub in_flight: bool,
}

impl Default for Waits {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(2),
            disable: Duration::from_secs(300),
            in_flight: true,
        }
    }
}

/// Disables the schedule, then every SQS mapping of the worker; waits until Lambda says they
/// are disabled and, unless told not to, for the invocations in flight to end. Already paused:
/// nothing changes.
pub async fn pause(
    lambda: &aws_sdk_lambda::Client,
    scheduler: &aws_sdk_scheduler::Client,
    targets: &Targets,
    waits: Waits,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<PauseState> {
    if let Some(name) = &targets.schedule {
        set_schedule(scheduler, name, false).await?;
        progress(&format!(
            "schedule {name} disabled: the lister is not invoked"
        ));
    }
    for m in mappings(lambda, &targets.worker_function).await? {
        let uuid = m.uuid().unwrap_or_default();
        if m.state() != Some("Disabled") {
            set_mapping(lambda, uuid, false).await?;
        }
        let started = std::time::Instant::now();
        loop {
            let now = lambda
                .get_event_source_mapping()
                .uuid(uuid)
                .send()
                .await
                .with_context(|| format!("reading the event source mapping {uuid}"))?;
            if now.state() == Some("Disabled") {
                break;
            }
            if started.elapsed() > waits.disable {
                bail!(
                    "the event source mapping {uuid} is still {:?} after {:?}: run pause again",
                    now.state().unwrap_or_default(),
                    waits.disable
                );
            }
            tokio::time::sleep(waits.poll).await;
        }
        progress(&format!(
            "event source mapping {uuid} disabled: no new batch is taken from the queue"
        ));
    }
    if waits.in_flight {
        let timeout = lambda
            .get_function_configuration()
            .function_name(&targets.worker_function)
            .send()
            .await
            .with_context(|| format!("reading the configuration of {}", targets.worker_function))?
            .timeout()
            .unwrap_or(900);
        progress(&format!(
            "waiting {timeout} s (the worker's timeout) for batches in flight to end"
        ));
        tokio::time::sleep(Duration::from_secs(timeout.max(0) as u64)).await;
    }
    state(lambda, scheduler, targets).await
}

/// Enables every SQS mapping of the worker, then the schedule.
pub async fn resume(
    lambda: &aws_sdk_lambda::Client,
    scheduler: &aws_sdk_scheduler::Client,
    targets: &Targets,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<PauseState> {
    for m in mappings(lambda, &targets.worker_function).await? {
        let uuid = m.uuid().unwrap_or_default();
        set_mapping(lambda, uuid, true).await?;
        progress(&format!("event source mapping {uuid} enabled"));
    }
    if let Some(name) = &targets.schedule {
        set_schedule(scheduler, name, true).await?;
        progress(&format!("schedule {name} enabled"));
    }
    state(lambda, scheduler, targets).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(mappings: &[&str], schedule: Option<&str>) -> PauseState {
        PauseState {
            mappings: mappings
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("m{i}"), s.to_string()))
                .collect(),
            schedule: schedule.map(str::to_string),
        }
    }

    #[test]
    fn paused_means_every_mapping_and_the_schedule_off() {
        assert!(st(&["Disabled"], Some("DISABLED")).paused());
        assert!(st(&["Disabled"], None).paused());
        assert!(!st(&["Disabled"], Some("ENABLED")).paused());
        assert!(!st(&["Disabling"], Some("DISABLED")).paused());
        assert!(!st(&[], None).paused());
        assert_eq!(
            st(&["Enabled"], Some("ENABLED")).describe(),
            "running (mapping m0 enabled, schedule enabled)"
        );
        assert!(
            st(&["Disabling"], None)
                .describe()
                .starts_with("partly paused")
        );
    }
}

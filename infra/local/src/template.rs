//! Reads `template.yaml`: the production stack is the single source of the local stack's
//! settings, and the invariants `cfn-lint` cannot see are checked here.

use std::time::Duration;

use yaml_serde::Value;

use crate::settings::StackSettings;

/// The project's template, as built into this crate.
pub const TEMPLATE: &str = include_str!("../../../template.yaml");

/// The production stack's settings, read from the built-in `template.yaml`.
pub fn stack_settings() -> Result<StackSettings, String> {
    Template::parse(TEMPLATE)?.stack_settings()
}

/// A number in the template: a literal, or a parameter (its default, and the lowest value a
/// deployer may give it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub default: f64,
    pub lowest: f64,
}

pub struct Template {
    root: Value,
}

fn tag_value<'a>(v: &'a Value, tag: &str) -> Option<&'a Value> {
    match v {
        Value::Tagged(t) if t.tag == tag => Some(&t.value),
        _ => None,
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let root: Value = yaml_serde::from_str(text)
            .map_err(|e| format!("template.yaml is not valid YAML: {e}"))?;
        Ok(Self { root })
    }

    pub fn resource(&self, name: &str) -> Option<&Value> {
        self.root.get("Resources")?.get(name)
    }

    fn prop<'a>(&'a self, resource: &str, path: &[&str]) -> Option<&'a Value> {
        let mut v = self.resource(resource)?.get("Properties")?;
        for p in path {
            v = v.get(*p)?;
        }
        Some(v)
    }

    /// A literal number or a `!Ref` to a numeric parameter; for `!If [condition, value,
    /// !Ref AWS::NoValue]` (a setting a deployer may leave out), the value when it is set.
    pub fn number(&self, v: &Value) -> Option<Setting> {
        if let Some(branches) = tag_value(v, "!If").and_then(Value::as_sequence) {
            return self.number(branches.get(1)?);
        }
        let as_f64 = |v: &Value| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        if let Some(n) = as_f64(v) {
            return Some(Setting {
                default: n,
                lowest: n,
            });
        }
        let name = tag_value(v, "!Ref")?.as_str()?;
        let p = self.root.get("Parameters")?.get(name)?;
        let default = as_f64(p.get("Default")?)?;
        let lowest = p
            .get("MinValue")
            .and_then(as_f64)
            .unwrap_or(f64::NEG_INFINITY);
        Some(Setting { default, lowest })
    }

    fn setting(&self, resource: &str, path: &[&str]) -> Result<Setting, String> {
        let v = self
            .prop(resource, path)
            .ok_or_else(|| format!("{resource}.{} is missing", path.join(".")))?;
        self.number(v).ok_or_else(|| {
            format!(
                "{resource}.{} is not a number or a numeric parameter",
                path.join(".")
            )
        })
    }

    /// A parameter's default, as a number.
    pub fn parameter_default(&self, name: &str) -> Option<f64> {
        let v = self.root.get("Parameters")?.get(name)?.get("Default")?;
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    }

    /// A function's configured memory in MB (its default, for a parameter).
    pub fn memory_mb(&self, function: &str) -> Result<u64, String> {
        Ok(self.setting(function, &["MemorySize"])?.default as u64)
    }

    /// The settings the local stack takes from the template.
    pub fn stack_settings(&self) -> Result<StackSettings, String> {
        let secs = |s: Setting| Duration::from_secs(s.default as u64);
        Ok(StackSettings {
            worker_timeout: secs(self.setting("WorkerFunction", &["Timeout"])?),
            visibility_timeout: secs(self.setting("WorkQueue", &["VisibilityTimeout"])?),
            max_receive_count: self
                .setting("WorkQueue", &["RedrivePolicy", "maxReceiveCount"])?
                .default as u32,
            batch_size: self
                .setting(
                    "WorkerFunction",
                    &["Events", "Work", "Properties", "BatchSize"],
                )?
                .default as u32,
            worker_concurrency: self
                .setting(
                    "WorkerFunction",
                    &[
                        "Events",
                        "Work",
                        "Properties",
                        "ScalingConfig",
                        "MaximumConcurrency",
                    ],
                )?
                .default as usize,
            dlq_retention: secs(self.setting("DeadLetterQueue", &["MessageRetentionPeriod"])?),
        })
    }

    /// Every broken invariant, in words; empty when the template is sound.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        let resources = self
            .root
            .get("Resources")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        for (name, res) in &resources {
            let name = name.as_str().unwrap_or("?");
            let kind = res.get("Type").and_then(Value::as_str).unwrap_or_default();
            let props = res.get("Properties");
            let get = |k: &str| {
                props
                    .and_then(|p| p.get(k))
                    .or_else(|| globals.and_then(|g| g.get(k)))
            };
            if kind == "AWS::Serverless::Function" {
                if get("Runtime").and_then(Value::as_str) != Some("provided.al2023") {
                    v.push(format!("{name}: Runtime must be provided.al2023"));
                }
                let arch: Vec<&str> = get("Architectures")
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if arch != ["arm64"] {
                    v.push(format!("{name}: Architectures must be [arm64]"));
                }
                if get("Handler").and_then(Value::as_str) != Some("bootstrap") {
                    v.push(format!("{name}: Handler must be bootstrap"));
                }
                if res
                    .get("Metadata")
                    .and_then(|m| m.get("BuildMethod"))
                    .and_then(Value::as_str)
                    != Some("rust-cargolambda")
                {
                    v.push(format!(
                        "{name}: Metadata.BuildMethod must be rust-cargolambda"
                    ));
                }
                if props.and_then(|p| p.get("FunctionName")).is_some() {
                    v.push(format!(
                        "{name}: a hard-coded FunctionName collides across stacks"
                    ));
                }
            }
            if let Some(names) =
                props.and_then(|p| p.get("QueueName").or_else(|| p.get("TableName")))
            {
                let derived = tag_value(names, "!Sub")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.contains("${AWS::StackName}"));
                if !derived {
                    v.push(format!(
                        "{name}: a physical name must be derived from the stack name"
                    ));
                }
            }
            if kind == "AWS::SQS::Queue"
                && props
                    .and_then(|p| p.get("SqsManagedSseEnabled"))
                    .and_then(Value::as_bool)
                    != Some(true)
            {
                v.push(format!(
                    "{name}: queues must have SSE (SqsManagedSseEnabled: true)"
                ));
            }
            for action in wildcard_actions(res) {
                v.push(format!("{name}: wildcard IAM action {action:?}"));
            }
        }

        // The worker's SQS event source.
        let event = self.prop("WorkerFunction", &["Events", "Work", "Properties"]);
        match event {
            None => v.push("WorkerFunction: no SQS event named Work".into()),
            Some(e) => {
                let types: Vec<&str> = e
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if types != ["ReportBatchItemFailures"] {
                    v.push(format!("WorkerFunction: FunctionResponseTypes must be [ReportBatchItemFailures], not {types:?}"));
                }
                let max = e
                    .get("ScalingConfig")
                    .and_then(|s| s.get("MaximumConcurrency"));
                let reserved = self.prop("WorkerFunction", &["ReservedConcurrentExecutions"]);
                match (max.and_then(|m| self.number(m)), reserved.and_then(|r| self.number(r))) {
                    (Some(m), Some(r)) => {
                        if m.lowest < 2.0 || m.default < 2.0 {
                            v.push("WorkerFunction: ScalingConfig.MaximumConcurrency can be below 2 (the SQS minimum)".into());
                        }
                        let same_source = max == reserved;
                        if !same_source && m.default > r.default {
                            v.push("WorkerFunction: MaximumConcurrency above the reserved concurrency throttles the poller into the DLQ".into());
                        }
                    }
                    _ => v.push("WorkerFunction: needs both ReservedConcurrentExecutions and ScalingConfig.MaximumConcurrency".into()),
                }
            }
        }
        match (
            self.setting("WorkQueue", &["VisibilityTimeout"]),
            self.setting("WorkerFunction", &["Timeout"]),
        ) {
            (Ok(vis), Ok(timeout))
                if vis.lowest >= 6.0 * timeout.default && vis.default >= 6.0 * timeout.default => {}
            (Ok(vis), Ok(timeout)) => v.push(format!(
                "WorkQueue: VisibilityTimeout {} is below 6 x the worker's timeout {}",
                vis.default, timeout.default
            )),
            (a, b) => v.extend([a.err(), b.err()].into_iter().flatten()),
        }
        match self.setting("WorkQueue", &["RedrivePolicy", "maxReceiveCount"]) {
            Ok(s) if s.lowest >= 5.0 && s.default >= 5.0 => {}
            Ok(s) => v.push(format!(
                "WorkQueue: maxReceiveCount can be {} (must be at least 5)",
                s.lowest.min(s.default)
            )),
            Err(e) => v.push(e),
        }
        let allow = self.prop("DeadLetterQueue", &["RedriveAllowPolicy"]);
        let permission = allow
            .and_then(|a| a.get("redrivePermission"))
            .and_then(Value::as_str);
        let sources = allow
            .and_then(|a| a.get("sourceQueueArns"))
            .and_then(Value::as_sequence)
            .map_or(0, |s| s.len());
        if !(permission == Some("allowAll") || (permission == Some("byQueue") && sources > 0)) {
            v.push("DeadLetterQueue: RedriveAllowPolicy must let the work queue redrive (byQueue with its ARN, or allowAll)".into());
        }
        match self.setting("DeadLetterQueue", &["MessageRetentionPeriod"]) {
            Ok(s) if s.default >= 1_209_600.0 => {}
            _ => v.push("DeadLetterQueue: MessageRetentionPeriod must be 14 days (1209600)".into()),
        }
        v
    }
}

fn wildcard_actions(v: &Value) -> Vec<String> {
    let mut found = Vec::new();
    match v {
        Value::Mapping(m) => {
            // A wildcard only takes away in a Deny (e.g. every request without TLS refused).
            let denies = m
                .iter()
                .any(|(k, v)| k.as_str() == Some("Effect") && v.as_str() == Some("Deny"));
            for (k, child) in m {
                if denies && (k.as_str() == Some("Action")) {
                    continue;
                }
                if k.as_str() == Some("Action") || k.as_str() == Some("NotAction") {
                    let actions: Vec<&str> = match child {
                        Value::String(s) => vec![s.as_str()],
                        Value::Sequence(s) => s.iter().filter_map(Value::as_str).collect(),
                        _ => vec![],
                    };
                    found.extend(
                        actions
                            .into_iter()
                            .filter(|a| a.contains('*'))
                            .map(str::to_string),
                    );
                } else {
                    found.extend(wildcard_actions(child));
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|c| found.extend(wildcard_actions(c))),
        Value::Tagged(t) => found.extend(wildcard_actions(&t.value)),
        _ => {}
    }
    found
}

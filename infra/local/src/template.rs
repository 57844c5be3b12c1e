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
        if let Some((index, table)) = self.lookup(v) {
            let at = |i: f64| table.get(i as usize).copied();
            return Some(Setting {
                default: at(index.default)?,
                lowest: at(index.lowest)?,
            });
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

    /// `!Select [index, !Split [",", "a,b,..."]]` (the list literal, or from `!FindInMap`): a
    /// value looked up by a number (the index's setting, and the table).
    fn lookup(&self, v: &Value) -> Option<(Setting, Vec<f64>)> {
        let select = tag_value(v, "!Select")?.as_sequence()?;
        let index = self.number(select.first()?)?;
        let split = tag_value(select.get(1)?, "!Split")?.as_sequence()?;
        let separator = split.first()?.as_str()?;
        let list = match tag_value(split.get(1)?, "!FindInMap").and_then(Value::as_sequence) {
            Some(path) => {
                let mut v = self.root.get("Mappings")?;
                for key in path {
                    v = v.get(key.as_str()?)?;
                }
                v.as_str()?
            }
            None => split.get(1)?.as_str()?,
        };
        let table = list
            .split(separator)
            .map(|n| n.trim().parse().ok())
            .collect::<Option<Vec<f64>>>()?;
        Some((index, table))
    }

    /// The largest value a parameter may take (`MaxValue`).
    fn highest(&self, v: &Value) -> Option<f64> {
        let name = tag_value(v, "!Ref")?.as_str()?;
        let p = self.root.get("Parameters")?.get(name)?;
        let max = p.get("MaxValue")?;
        max.as_f64()
            .or_else(|| max.as_str().and_then(|s| s.parse().ok()))
    }

    /// Whether the worker's reserved concurrency (when reserved) is at least the sum of its
    /// event sources' MaximumConcurrency for every value a deployer may give: a poller that
    /// takes a batch the function may not run is throttled, and the batch's receives count
    /// toward the DLQ.
    fn reservation_covers(&self, reserved: &Value, pollers: &[Value]) -> Vec<String> {
        const TOO_LOW: &str = "WorkerFunction: the reserved concurrency is below the event sources' MaximumConcurrency together: a throttled poller moves batches toward the DLQ";
        let reserved = tag_value(reserved, "!If")
            .and_then(Value::as_sequence)
            .and_then(|b| b.get(1))
            .unwrap_or(reserved);
        // Every poller but at most one is a literal; the one that is not varies with its
        // parameter across its whole range.
        let (mut fixed, mut varying) = (0.0, None);
        for p in pollers {
            match p
                .as_f64()
                .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
            {
                Some(n) => fixed += n,
                None if varying.is_none() => varying = Some(p),
                None => {
                    return vec![format!(
                        "{TOO_LOW} (more than one event source's MaximumConcurrency is a parameter: it cannot be checked)"
                    )];
                }
            }
        }
        let Some(varying) = varying else {
            return match self.number(reserved) {
                Some(r) if r.lowest >= fixed && r.default >= fixed => vec![],
                _ => vec![TOO_LOW.into()],
            };
        };
        let Some(range) = self.number(varying).zip(self.highest(varying)) else {
            return vec![format!(
                "{TOO_LOW} (a MaximumConcurrency is neither a literal nor a bounded parameter)"
            )];
        };
        let (low, high) = (range.0.lowest, range.1);
        let at = |n: f64| -> Option<f64> {
            if reserved == varying {
                return Some(n);
            }
            let (_, table) = self.lookup(reserved)?;
            (select_index(reserved)? == varying)
                .then(|| table.get(n as usize).copied())
                .flatten()
        };
        let mut n = low;
        while n <= high {
            if at(n).is_none_or(|r| r < n + fixed) {
                return vec![format!("{TOO_LOW} (at {n} work pollers and {fixed} more)")];
            }
            n += 1.0;
        }
        vec![]
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
            read_back_batch_size: self
                .setting(
                    "WorkerFunction",
                    &["Events", "ReadBack", "Properties", "BatchSize"],
                )?
                .default as u32,
            read_back_window: secs(self.setting(
                "WorkerFunction",
                &[
                    "Events",
                    "ReadBack",
                    "Properties",
                    "MaximumBatchingWindowInSeconds",
                ],
            )?),
            read_back_concurrency: self
                .setting(
                    "WorkerFunction",
                    &[
                        "Events",
                        "ReadBack",
                        "Properties",
                        "ScalingConfig",
                        "MaximumConcurrency",
                    ],
                )?
                .default as usize,
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

        // The worker's SQS event sources: the work queue's and the read-back queue's.
        let mut pollers = Vec::new();
        for (event, queue) in [("Work", "WorkQueue"), ("ReadBack", "ReadBackQueue")] {
            let Some(e) = self.prop("WorkerFunction", &["Events", event, "Properties"]) else {
                v.push(format!("WorkerFunction: no SQS event named {event}"));
                continue;
            };
            let types: Vec<&str> = e
                .get("FunctionResponseTypes")
                .and_then(Value::as_sequence)
                .map(|s| s.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if types != ["ReportBatchItemFailures"] {
                v.push(format!("WorkerFunction: {event}'s FunctionResponseTypes must be [ReportBatchItemFailures], not {types:?}"));
            }
            let source = e
                .get("Queue")
                .and_then(|q| tag_value(q, "!GetAtt"))
                .and_then(Value::as_str);
            if source != Some(&format!("{queue}.Arn")) {
                v.push(format!("WorkerFunction: {event} must read {queue}"));
            }
            match e
                .get("ScalingConfig")
                .and_then(|s| s.get("MaximumConcurrency"))
            {
                Some(m) => match self.number(m) {
                    Some(n) if n.lowest >= 2.0 && n.default >= 2.0 => pollers.push(m.clone()),
                    _ => v.push(format!("WorkerFunction: {event}'s ScalingConfig.MaximumConcurrency can be below 2 (the SQS minimum)")),
                },
                None => v.push(format!(
                    "WorkerFunction: {event} needs ScalingConfig.MaximumConcurrency"
                )),
            }
        }
        match self.prop("WorkerFunction", &["ReservedConcurrentExecutions"]) {
            None => v.push(
                "WorkerFunction: needs ReservedConcurrentExecutions (with ReserveConcurrency)"
                    .into(),
            ),
            Some(reserved) => v.extend(self.reservation_covers(reserved, &pollers)),
        }
        // Both queues the worker reads: SQS's guidance on each, and the one maxReceiveCount the
        // worker knows (MAX_RECEIVE_COUNT) on both.
        for queue in ["WorkQueue", "ReadBackQueue"] {
            match (
                self.setting(queue, &["VisibilityTimeout"]),
                self.setting("WorkerFunction", &["Timeout"]),
            ) {
                (Ok(vis), Ok(timeout))
                    if vis.lowest >= 6.0 * timeout.default
                        && vis.default >= 6.0 * timeout.default => {}
                (Ok(vis), Ok(timeout)) => v.push(format!(
                    "{queue}: VisibilityTimeout {} is below 6 x the worker's timeout {}",
                    vis.default, timeout.default
                )),
                (a, b) => v.extend([a.err(), b.err()].into_iter().flatten()),
            }
            let path = ["RedrivePolicy", "maxReceiveCount"];
            match self.setting(queue, &path) {
                Ok(s) if s.lowest >= 5.0 && s.default >= 5.0 => {}
                Ok(s) => v.push(format!(
                    "{queue}: maxReceiveCount can be {} (must be at least 5)",
                    s.lowest.min(s.default)
                )),
                Err(e) => v.push(e),
            }
            if self.prop(queue, &path) != self.prop("WorkQueue", &path) {
                v.push(format!("{queue}: maxReceiveCount must be the work queue's (the worker knows one, MAX_RECEIVE_COUNT)"));
            }
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

/// The index of a `!Select`.
fn select_index(v: &Value) -> Option<&Value> {
    tag_value(v, "!Select")?.as_sequence()?.first()
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

//! What `sam deploy` hands CloudFormation: the template transformed by SAM's own translator
//! (`infra/scripts/sam_transform.py`, offline), checked where the linters, which read the
//! untransformed template, cannot see: the roles and policies SAM generates, the names two
//! stacks in one account would share, the alarms and the dashboard. Each check is also shown to
//! catch the fault it is for, on a template broken on purpose.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The transformed template of `text` (the project's template unless a test broke it).
pub fn transform(text: &str) -> Value {
    let root = root();
    let python = root.join(".venv-tools/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make tools` creates it (`make test` does so first)",
        python.display()
    );
    let file = std::env::temp_dir().join(format!("template-{}.yaml", uuid::Uuid::new_v4()));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(python)
        .arg(root.join("infra/scripts/sam_transform.py"))
        .arg(&file)
        .output()
        .expect("running SAM's translator");
    std::fs::remove_file(&file).ok();
    assert!(
        out.status.success(),
        "SAM's translator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the translator prints JSON")
}

pub fn template() -> String {
    std::fs::read_to_string(root().join("template.yaml")).unwrap()
}

/// `template.yaml` with `from` (which must occur once) replaced by `to`.
pub fn broken(from: &str, to: &str) -> String {
    let t = template();
    assert_eq!(t.matches(from).count(), 1, "mutation anchor {from:?}");
    t.replace(from, to)
}

pub fn resources(t: &Value) -> impl Iterator<Item = (&String, &Value)> {
    t["Resources"].as_object().unwrap().iter()
}

/// Logical ids and parameters `v` refers to (Ref, GetAtt, and `${...}` in Sub).
fn references(v: &Value, found: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                match (k.as_str(), child) {
                    ("Ref", Value::String(name)) => {
                        found.insert(name.clone());
                    }
                    ("Fn::GetAtt", Value::Array(parts)) => {
                        if let Some(Value::String(name)) = parts.first() {
                            found.insert(name.clone());
                        }
                    }
                    ("Fn::Sub", _) => {
                        let text = match child {
                            Value::String(s) => s.as_str(),
                            Value::Array(parts) => parts[0].as_str().unwrap_or_default(),
                            _ => "",
                        };
                        for piece in text.split("${").skip(1) {
                            let name = piece.split('}').next().unwrap_or_default();
                            found.insert(name.split('.').next().unwrap_or_default().into());
                        }
                        references(child, found);
                    }
                    _ => references(child, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| references(i, found)),
        _ => {}
    }
}

/// The statements of a role's inline policies; a statement under `Fn::If [c, s, NoValue]`
/// counts as `s`.
pub fn statements(role: &Value) -> impl Iterator<Item = &Value> {
    role["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| {
            policy["PolicyDocument"]["Statement"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .map(|statement| match statement.get("Fn::If") {
            Some(branches) => &branches[1],
            None => statement,
        })
}

/// A statement's actions (one, or a list).
fn statement_actions(statement: &Value) -> Vec<&str> {
    match &statement["Action"] {
        Value::String(a) => vec![a.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

/// Every way the transformed template grants more than the functions use.
fn privilege_findings(t: &Value) -> Vec<String> {
    let mut findings = Vec::new();
    // What each role's statements may name: its function's own resources, or the parameters
    // that stand in for them.
    let allowed: [(&str, &[&str]); 4] = [
        (
            "WorkerRole",
            &[
                "WorkerLogGroup",
                "WorkQueue",
                "ReadBackQueue",
                "ResultsTable",
                "ExistingResultsTableName",
                "CloudinarySecret",
                "ExistingCloudinarySecretArn",
                "CreateResultsTable",
                "CreateSecret",
                "CloudinarySecretKmsKeyArn",
                // The OCR budget's counters.
                "CheckpointTable",
                "ExistingCheckpointTableName",
                "CreateCheckpointTable",
            ],
        ),
        (
            "ListerRole",
            &[
                "ListerLogGroup",
                "WorkQueue",
                "CheckpointTable",
                "ExistingCheckpointTableName",
                // An asset the queue refuses is recorded failed (PutItem only).
                "ResultsTable",
                "ExistingResultsTableName",
                "CloudinarySecret",
                "ExistingCloudinarySecretArn",
                "CreateCheckpointTable",
                "CreateResultsTable",
                "CreateSecret",
                "CloudinarySecretKmsKeyArn",
            ],
        ),
        ("ListerScheduleRole", &["ListerFunction"]),
        (
            "NotifierRole",
            &[
                "NotifierLogGroup",
                "WorkQueue",
                "ResultsTable",
                "ExistingResultsTableName",
                "CloudinarySecret",
                "ExistingCloudinarySecretArn",
                "CreateResultsTable",
                "CreateSecret",
                "CloudinarySecretKmsKeyArn",
            ],
        ),
    ];
    let pseudo = ["AWS::Partition", "AWS::Region", "AWS::AccountId", "Table"];
    for (name, res) in resources(t) {
        if res["Type"] != "AWS::IAM::Role" {
            continue;
        }
        let props = &res["Properties"];
        if let Some(arns) = props["ManagedPolicyArns"].as_array() {
            for arn in arns {
                findings.push(format!(
                    "{name}: managed policy {arn} (not scoped to this stack)"
                ));
            }
        }
        let Some((_, allowed)) = allowed.iter().find(|(role, _)| role == name) else {
            findings.push(format!("{name}: a role no check knows"));
            continue;
        };
        for statement in statements(res) {
            let actions = statement_actions(statement);
            let resources = match &statement["Resource"] {
                Value::Array(r) => r.clone(),
                other => vec![other.clone()],
            };
            for action in &actions {
                if action.contains('*') {
                    findings.push(format!("{name}: wildcard action {action}"));
                }
            }
            for resource in &resources {
                if resource.as_str().is_some_and(|r| r.contains('*')) {
                    findings.push(format!("{name}: {actions:?} on {resource}"));
                }
                let mut named = BTreeSet::new();
                references(resource, &mut named);
                for n in named {
                    if !allowed.contains(&n.as_str()) && !pseudo.contains(&n.as_str()) {
                        findings.push(format!("{name}: {actions:?} on {n}, which it does not use"));
                    }
                }
            }
        }
    }
    for function in ["WorkerFunction", "ListerFunction", "NotifierFunction"] {
        let role = &t["Resources"][function]["Properties"]["Role"]["Fn::GetAtt"][0];
        let expected = function.replace("Function", "Role");
        if role != expected.as_str() {
            findings.push(format!("{function}: runs as {role}, not {expected}"));
        }
    }
    findings
}

#[test]
fn what_sam_generates_grants_each_function_only_what_it_uses() {
    assert_eq!(
        privilege_findings(&transform(&template())),
        Vec::<String>::new()
    );
}

/// The DynamoDB actions `role` is allowed on the results table.
fn results_table_actions(t: &Value, role: &str) -> BTreeSet<String> {
    statements(&t["Resources"][role])
        .filter(|statement| {
            let mut named = BTreeSet::new();
            references(&statement["Resource"], &mut named);
            named.contains("ResultsTable")
        })
        .flat_map(|statement| statement_actions(statement).into_iter().map(String::from))
        .collect()
}

/// What the worker's store calls that its role does not allow on the results table.
fn worker_actions_missing(t: &Value) -> Vec<&'static str> {
    let allowed = results_table_actions(t, "WorkerRole");
    shared::store::dynamodb::WORKER_ACTIONS
        .into_iter()
        .filter(|a| !allowed.contains(*a))
        .collect()
}

/// What the notifier's store calls that its role does not allow on the results table.
fn notifier_actions_missing(t: &Value) -> Vec<&'static str> {
    let allowed = results_table_actions(t, "NotifierRole");
    shared::store::dynamodb::NOTIFIER_ACTIONS
        .into_iter()
        .filter(|a| !allowed.contains(*a))
        .collect()
}

#[test]
fn the_notifier_may_make_every_call_its_store_makes_and_its_url_is_public_and_only_its() {
    let t = transform(&template());
    assert_eq!(notifier_actions_missing(&t), Vec::<&str>::new());
    let role = &t["Resources"]["NotifierRole"];
    let sends: Vec<_> = statements(role)
        .flat_map(|s| statement_actions(s).into_iter().map(String::from))
        .filter(|a| a.starts_with("sqs:"))
        .collect();
    assert_eq!(sends, ["sqs:SendMessage"], "the notifier only sends work");
    // A public URL needs both permissions; only the notifier has a URL.
    let mut urls = Vec::new();
    let mut permissions = Vec::new();
    for (name, res) in resources(&t) {
        match res["Type"].as_str() {
            Some("AWS::Lambda::Url") => urls.push(name.to_string()),
            Some("AWS::Lambda::Permission") if res["Properties"]["Principal"] == "*" => {
                let p = &res["Properties"];
                assert_eq!(p["FunctionName"]["Ref"], "NotifierFunction", "{name}");
                permissions.push((
                    p["Action"].as_str().unwrap_or_default().to_string(),
                    p["FunctionUrlAuthType"].as_str().map(str::to_string),
                    p["InvokedViaFunctionUrl"].as_bool(),
                ));
            }
            _ => {}
        }
    }
    assert_eq!(urls, ["NotifierFunctionUrl"]);
    permissions.sort();
    assert_eq!(
        permissions,
        [
            ("lambda:InvokeFunction".to_string(), None, Some(true)),
            (
                "lambda:InvokeFunctionUrl".to_string(),
                Some("NONE".to_string()),
                None
            ),
        ]
    );
    let url = &t["Resources"]["NotifierFunctionUrl"]["Properties"];
    assert_eq!(url["TargetFunctionArn"]["Ref"], "NotifierFunction");
    assert_eq!(
        t["Outputs"]["NotifierUrl"]["Value"]["Fn::GetAtt"],
        serde_json::json!(["NotifierFunctionUrl", "FunctionUrl"])
    );
    let env = &t["Resources"]["NotifierFunction"]["Properties"]["Environment"]["Variables"];
    for name in [
        "RESULTS_TABLE",
        "WORK_QUEUE_URL",
        "KEEP_DELETED_TEXT",
        "SCOPE_PREFIXES",
        "CLOUDINARY_SECRET_ARN",
        "CLOUDINARY_SIGNATURE_ALGORITHM",
    ] {
        assert!(env.get(name).is_some(), "the notifier has no {name}: {env}");
    }
}

#[test]
fn the_worker_may_make_every_call_its_store_makes() {
    assert_eq!(
        worker_actions_missing(&transform(&template())),
        Vec::<&str>::new()
    );
    // Without UpdateItem, every claim would be refused.
    let broken = broken(
        "                  - dynamodb:PutItem\n                  - dynamodb:UpdateItem\n                Resource: !Sub\n                  - arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}\n                  - Table: !If [CreateResultsTable",
        "                  - dynamodb:PutItem\n                Resource: !Sub\n                  - arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}\n                  - Table: !If [CreateResultsTable",
    );
    assert_eq!(
        worker_actions_missing(&transform(&broken)),
        vec!["dynamodb:UpdateItem"]
    );
}

#[test]
fn a_role_left_to_sam_or_a_broad_statement_is_caught() {
    let cases = [
        // SAM's own role for the SQS event source: every queue in the account.
        (
            "      Role: !GetAtt WorkerRole.Arn\n",
            "",
            "AWSLambdaSQSQueueExecutionRole",
        ),
        (
            "                  - !GetAtt ReadBackQueue.Arn\n              - Sid: ResultsTableItems",
            "                  - \"*\"\n              - Sid: ResultsTableItems",
            "on \"*\"",
        ),
        (
            "                  - sqs:SendMessage\n                Resource: !GetAtt WorkQueue.Arn\n              - Sid: CheckpointItem",
            "                  - sqs:SendMessage\n                Resource: !GetAtt DeadLetterQueue.Arn\n              - Sid: CheckpointItem",
            "on DeadLetterQueue, which it does not use",
        ),
    ];
    for (from, to, expected) in cases {
        let findings = privilege_findings(&transform(&broken(from, to)));
        assert!(
            findings.iter().any(|f| f.contains(expected)),
            "breaking {from:?} was not caught (expected {expected:?}): {findings:?}"
        );
    }
}

/// A `Fn::Sub` string (or a literal) as it resolves in stack `stack`; `None` when it names
/// another resource (whose physical name CloudFormation makes unique).
fn resolve(v: &Value, stack: &str) -> Option<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Object(m) if m.contains_key("Fn::Sub") => match &m["Fn::Sub"] {
            Value::String(s) => s.clone(),
            _ => return None,
        },
        _ => return None,
    };
    let pseudo = [
        ("${AWS::StackName}", stack),
        ("${AWS::Region}", "us-east-1"),
        ("${AWS::AccountId}", "123456789012"),
        ("${AWS::Partition}", "aws"),
    ];
    let resolved = pseudo
        .iter()
        .fold(text, |t, (from, to)| t.replace(from, to));
    (!resolved.contains("${")).then_some(resolved)
}

/// The physical names a stack named `stack` would claim, as "Type name".
fn names(t: &Value, stack: &str) -> HashSet<String> {
    const NAME_KEYS: [&str; 10] = [
        "Name",
        "QueueName",
        "TableName",
        "FunctionName",
        "RoleName",
        "LogGroupName",
        "TopicName",
        "AlarmName",
        "DashboardName",
        "GroupName",
    ];
    let mut found = HashSet::new();
    for (_, res) in resources(t) {
        for key in NAME_KEYS {
            if let Some(name) = resolve(&res["Properties"][key], stack) {
                found.insert(format!("{} {name}", res["Type"].as_str().unwrap()));
            }
        }
    }
    found
}

/// Custom metrics the alarms and the dashboard read that do not name the stack.
fn unscoped_metrics(t: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for (name, res) in resources(t) {
        let props = &res["Properties"];
        if res["Type"] == "AWS::CloudWatch::Alarm" && props["Namespace"] == "CloudinaryOcr" {
            let stack = props["Dimensions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["Name"] == "Stack" && d["Value"]["Ref"] == "AWS::StackName");
            if !stack {
                found.push(format!("{name}: {} without the stack", props["MetricName"]));
            }
        }
    }
    for metric in dashboard_metrics(t) {
        let row: Vec<&str> = metric.iter().filter_map(Value::as_str).collect();
        if row.first() == Some(&"CloudinaryOcr")
            && !row.windows(2).any(|w| w == ["Stack", "${AWS::StackName}"])
        {
            found.push(format!("Dashboard: {row:?} without the stack"));
        }
    }
    found
}

#[test]
fn two_stacks_in_one_account_share_no_name_and_no_metric() {
    let t = transform(&template());
    let (a, b) = (names(&t, "ocr-a"), names(&t, "ocr-b"));
    assert!(!a.is_empty(), "the named resources are found");
    let shared: Vec<&String> = a.intersection(&b).collect();
    assert!(
        shared.is_empty(),
        "names both stacks would claim: {shared:?}"
    );
    assert_eq!(unscoped_metrics(&t), Vec::<String>::new());
    // And the functions put the stack on every metric they write.
    assert_eq!(
        shared::telemetry::DIMENSIONS,
        ["Stack", "Function"],
        "the functions' metric dimensions"
    );
    let env = &t["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(env["STACK_NAME"]["Ref"], "AWS::StackName");
}

#[test]
fn a_fixed_name_or_an_unscoped_metric_is_caught() {
    // SAM names a schedule after its logical id unless told otherwise.
    let t = transform(&broken(
        "            Name: !Sub ${AWS::StackName}-lister\n",
        "",
    ));
    let (a, b) = (names(&t, "ocr-a"), names(&t, "ocr-b"));
    assert!(
        a.contains("AWS::Scheduler::Schedule ListerFunctionSchedule")
            && a.intersection(&b).count() == 1,
        "{a:?}"
    );
    let t = transform(&broken(
        "        - Name: Stack\n          Value: !Ref AWS::StackName\n        - Name: Function\n          Value: lister\n",
        "        - Name: Function\n          Value: lister\n",
    ));
    assert_eq!(
        unscoped_metrics(&t),
        ["ListerSilentAlarm: \"ListerRunsCompleted\" without the stack"]
    );
}

/// The dashboard's metric rows, its body resolved as CloudFormation would.
fn dashboard_metrics(t: &Value) -> Vec<Vec<Value>> {
    let body = dashboard(t);
    body["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| {
            w["properties"]["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|m| m.as_array().cloned())
        .collect()
}

/// The dashboard body, parsed (its `${...}` left as written, inside strings).
fn dashboard(t: &Value) -> Value {
    let sub = &t["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"];
    let text = sub[0]
        .as_str()
        .expect("the body is a Fn::Sub with variables");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}"))
}

/// Metric names the functions write.
fn emitted_metrics() -> HashSet<&'static str> {
    let outcome = shared::worker::BatchOutcome {
        cloudinary_latency_ms: vec![100],
        quota_remaining: Some(10),
        quota_limit: Some(2000),
        ..Default::default()
    };
    let summary = shared::lister::RunSummary {
        mode: shared::store::PassMode::Full,
        pages: 1,
        listed: 1,
        enqueued: 1,
        refused: 0,
        pass_listed: 1,
        stop: shared::lister::StopReason::PassComplete,
        quota_resets_at: None,
        next_pass_at: None,
    };
    use shared::notify::{Outcome, Refusal};
    let notifications = [
        Outcome::Refused(Refusal::BadSignature),
        Outcome::Ignored("not_acted_on"),
        Outcome::Enqueued(1),
        Outcome::Failed("the table refused".into()),
    ];
    worker::batch_metrics(&outcome)
        .into_iter()
        .chain(lister::run_metrics(&summary))
        .chain(notifications.iter().flat_map(Outcome::metrics))
        .map(|m| m.name)
        .collect()
}

#[test]
fn alarms_reach_someone_and_watch_what_an_operator_must_know() {
    let t = transform(&template());
    let topic = &t["Resources"]["AlarmTopic"]["Properties"];
    assert!(
        topic["KmsMasterKeyId"].is_null(),
        "CloudWatch cannot publish to a topic under the AWS-managed SNS key: {topic}"
    );
    let emitted = emitted_metrics();
    let mut watched = BTreeSet::new();
    for (name, res) in resources(&t) {
        if res["Type"] != "AWS::CloudWatch::Alarm" {
            continue;
        }
        let props = &res["Properties"];
        assert_eq!(
            props["AlarmActions"]["Fn::If"][1][0]["Ref"], "AlarmTopic",
            "{name} notifies the topic"
        );
        let metric = props["MetricName"].as_str().unwrap();
        if props["Namespace"] == "CloudinaryOcr" {
            assert!(
                emitted.contains(metric),
                "{name}: no function writes {metric}"
            );
        }
        let dimension = props["Dimensions"][0]["Value"].clone();
        let subject = dimension["Fn::GetAtt"][0]
            .as_str()
            .or(dimension["Ref"].as_str())
            .map(str::to_string)
            .unwrap_or_default();
        let subject = if props["Namespace"] == "CloudinaryOcr" {
            props["Dimensions"][1]["Value"]
                .as_str()
                .unwrap()
                .to_string()
        } else {
            subject
        };
        watched.insert(format!("{metric} {subject}"));
    }
    for expected in [
        "ApproximateNumberOfMessagesVisible DeadLetterQueue",
        "Errors WorkerFunction",
        "Errors ListerFunction",
        "ApproximateAgeOfOldestMessage WorkQueue",
        "ApproximateAgeOfOldestMessage ReadBackQueue",
        "Throttles WorkerFunction",
        "ListerRunsCompleted lister",
        "CloudinaryCredentialsRefused worker",
        "RateLimitDeadLetters worker",
        "Errors NotifierFunction",
        "NotificationsRefused notifier",
        "NotificationsFailed notifier",
    ] {
        assert!(
            watched.contains(expected),
            "no alarm on {expected}: {watched:?}"
        );
    }
    let silent = &t["Resources"]["ListerSilentAlarm"]["Properties"];
    assert_eq!(
        (
            silent["TreatMissingData"].as_str(),
            silent["ComparisonOperator"].as_str()
        ),
        (Some("breaching"), Some("LessThanThreshold")),
        "a lister that writes nothing is silent"
    );
}

#[test]
fn the_dashboard_shows_the_backfill_from_metrics_that_exist() {
    let t = transform(&template());
    let emitted = emitted_metrics();
    let rows = dashboard_metrics(&t);
    assert!(rows.len() >= 20, "{} metric rows", rows.len());
    let mut names = BTreeSet::new();
    for row in &rows {
        if row[0] == "CloudinaryOcr" {
            let metric = row[1].as_str().unwrap();
            assert!(
                emitted.contains(metric),
                "the dashboard reads {metric}, which nothing writes"
            );
            names.insert(metric.to_string());
        }
    }
    for cause in shared::worker::DeferCause::ALL {
        assert!(
            names.contains(cause.metric()),
            "deferrals by reason: {}",
            cause.metric()
        );
    }
    for needed in [
        "AssetsOcrd",
        "AssetsNoText",
        "AssetsFailed",
        "CloudinaryQuotaRemaining",
        "AssetsRetried",
    ] {
        assert!(names.contains(needed), "{needed}");
    }
    let url = t["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert!(url.contains("#dashboards:name=${Dashboard}"), "{url}");
}

/// Every `Ref`/`GetAtt` of `logical` in `v` that is not inside `Fn::If [condition, ...]`.
fn unguarded(v: &Value, logical: &str, condition: &str, path: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(branches)) = m.get("Fn::If")
                && branches.first().and_then(Value::as_str) == Some(condition)
            {
                // The true branch may name it; the other must not.
                if let Some(other) = branches.get(2) {
                    unguarded(other, logical, condition, path, found);
                }
                return;
            }
            let mut named = BTreeSet::new();
            for (k, child) in m {
                if (k == "Ref" && child == logical) || (k == "Fn::GetAtt" && child[0] == logical) {
                    named.insert(logical.to_string());
                }
                unguarded(child, logical, condition, &format!("{path}.{k}"), found);
            }
            if !named.is_empty() {
                found.push(path.to_string());
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unguarded(item, logical, condition, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_data_and_the_secret_outlive_the_stack_and_a_redeploy_can_adopt_them() {
    let t = transform(&template());
    for (table, condition) in [
        ("ResultsTable", "CreateResultsTable"),
        ("CheckpointTable", "CreateCheckpointTable"),
        ("CloudinarySecret", "CreateSecret"),
        ("ExportBucket", "CreateExportBucket"),
    ] {
        let res = &t["Resources"][table];
        // Kept when the stack is deleted, removed when the stack's first create rolls back
        // (else every failed first deploy leaves a set behind, and the retry another).
        assert_eq!(res["DeletionPolicy"], "RetainExceptOnCreate", "{table}");
        if table != "CloudinarySecret" {
            assert_eq!(res["UpdateReplacePolicy"], "Retain", "{table}");
        }
        assert_eq!(
            res["Condition"], condition,
            "{table}: created only when none is given"
        );
        let mut found = Vec::new();
        // A resource under the same condition exists only alongside it.
        for (name, other) in resources(&t).filter(|(_, r)| r["Condition"] != condition) {
            unguarded(other, table, condition, name, &mut found);
        }
        unguarded(&t["Outputs"], table, condition, "Outputs", &mut found);
        assert_eq!(
            found,
            Vec::<String>::new(),
            "{table} named where it may not exist"
        );
    }
    // Deletion protection would make that rollback fail (DeleteTable refused): it is turned on
    // by hand once the stack exists (README, "Deploy & operate").
    assert!(
        t["Resources"]["ResultsTable"]["Properties"]
            .get("DeletionProtectionEnabled")
            .is_none()
    );
    // No parameter feeds the secret's value: a deploy never overwrites the live secret.
    let value = &t["Resources"]["CloudinarySecret"]["Properties"]["SecretString"];
    assert!(value.is_string(), "a fixed placeholder, not {value}");
    assert!(t["Parameters"].get("CloudinaryUrl").is_none());
}

#[test]
fn a_table_named_without_its_condition_is_caught() {
    let t = transform(&broken(
        "        Variables:\n          RESULTS_TABLE: !If [CreateResultsTable, !Ref ResultsTable, !Ref ExistingResultsTableName]",
        "        Variables:\n          RESULTS_TABLE: !Ref ResultsTable",
    ));
    let mut found = Vec::new();
    for (name, res) in resources(&t) {
        unguarded(res, "ResultsTable", "CreateResultsTable", name, &mut found);
    }
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("WorkerFunction"), "{found:?}");
}

#[test]
fn lambda_logs_are_json_at_the_stacks_level_and_reserved_concurrency_is_optional() {
    let t = transform(&template());
    for function in ["WorkerFunction", "ListerFunction", "NotifierFunction"] {
        let props = &t["Resources"][function]["Properties"];
        let logging = &props["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{function}");
        assert_eq!(
            logging["ApplicationLogLevel"]["Ref"], "LogLevel",
            "{function}"
        );
        assert!(
            props["Environment"]["Variables"].get("RUST_LOG").is_none(),
            "{function}: RUST_LOG would override Lambda's level"
        );
        assert_eq!(
            props["ReservedConcurrentExecutions"]["Fn::If"][0], "ReserveConcurrency",
            "{function}"
        );
        assert_eq!(
            props["ReservedConcurrentExecutions"]["Fn::If"][2]["Ref"], "AWS::NoValue",
            "{function}"
        );
    }
    let mapping = &t["Resources"]["WorkerFunctionWork"]["Properties"];
    assert_eq!(
        mapping["ScalingConfig"]["MaximumConcurrency"]["Ref"], "WorkerConcurrency",
        "without a reservation MaximumConcurrency alone caps the worker"
    );
    let read_back = &t["Resources"]["WorkerFunctionReadBack"]["Properties"];
    assert_eq!(read_back["ScalingConfig"]["MaximumConcurrency"], 4);
    assert_eq!(read_back["BatchSize"], 99);
    assert_eq!(
        read_back["EventSourceArn"]["Fn::GetAtt"][0], "ReadBackQueue",
        "{read_back}"
    );
    // Reserved, the worker's concurrency covers both event sources: WorkerConcurrency + 4.
    // The instances that share the quota are the same sum.
    let worker = &t["Resources"]["WorkerFunction"]["Properties"];
    let instances = &worker["Environment"]["Variables"]["WORKER_INSTANCES"];
    for sum in [
        &worker["ReservedConcurrentExecutions"]["Fn::If"][1],
        instances,
    ] {
        let select = &sum["Fn::Select"];
        assert_eq!(select[0]["Ref"], "WorkerConcurrency", "{sum}");
        let path = &select[1]["Fn::Split"][1]["Fn::FindInMap"];
        let key = |i: usize| path[i].as_str().unwrap_or_else(|| panic!("{sum}"));
        let table: Vec<u64> = t["Mappings"][key(0)][key(1)][key(2)]
            .as_str()
            .expect("a list")
            .split(',')
            .map(|n| n.parse().expect("a number"))
            .collect();
        assert_eq!(table.len(), 201);
        assert!(table.iter().enumerate().all(|(n, r)| *r == n as u64 + 4));
    }
    for output in ["WorkQueueArn", "DeadLetterQueueArn", "DashboardUrl"] {
        assert!(t["Outputs"].get(output).is_some(), "{output}");
    }
}

/// `ocr-ctl --stack-name` reads the names from these outputs: the stack declares each.
#[test]
fn the_stack_declares_every_output_ocr_ctl_reads() {
    let t = transform(&template());
    for key in ocr_ctl::STACK_OUTPUTS {
        assert!(
            t["Outputs"].get(key).is_some(),
            "output {key} is missing from the stack"
        );
    }
}

/// The bucket an `!Sub [text, {Bucket: ...}]` names: the stack's own, or ExportBucketName.
fn export_bucket_sub(v: &Value) -> &str {
    let sub = v["Fn::Sub"].as_array().expect("Fn::Sub with variables");
    assert_eq!(
        sub[1]["Bucket"]["Fn::If"],
        serde_json::json!(["CreateExportBucket", {"Ref": "ExportBucket"}, {"Ref": "ExportBucketName"}])
    );
    sub[0].as_str().unwrap()
}

/// Every stack puts SQL over the exports, in the bucket it is given or one it creates: a Glue
/// table whose columns are the exported row's fields in order, read as gzip-compressed JSON
/// lines from the export prefix, an Athena workgroup whose results stay in the bucket, and the
/// outputs `ocr-ctl --stack-name S export --to stack` reads.
#[test]
fn the_stack_can_put_sql_over_the_exports() {
    let t = transform(&template());
    for logical in ["ExportDatabase", "ExportTable", "ExportWorkGroup"] {
        assert!(
            t["Resources"][logical].get("Condition").is_none(),
            "{logical}"
        );
    }
    for key in ocr_ctl::EXPORT_OUTPUTS {
        assert!(t["Outputs"][key].get("Condition").is_none(), "{key}");
    }
    let mut header = csv::Writer::from_writer(Vec::new());
    header
        .serialize(ocr_ctl::export::Row::from_item(&Default::default()))
        .unwrap();
    let header = String::from_utf8(header.into_inner().unwrap()).unwrap();
    let fields: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    let input = &t["Resources"]["ExportTable"]["Properties"]["TableInput"];
    let sd = &input["StorageDescriptor"];
    let columns: Vec<&str> = sd["Columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, fields);
    assert_eq!(
        sd["SerdeInfo"]["SerializationLibrary"],
        "org.openx.data.jsonserde.JsonSerDe"
    );
    assert_eq!(input["Parameters"]["compressionType"], "gzip");
    let location = export_bucket_sub(&sd["Location"]);
    assert!(
        location.starts_with("s3://${Bucket}/${ExportPrefix}runs/"),
        "{location}"
    );
    let wg = &t["Resources"]["ExportWorkGroup"]["Properties"]["WorkGroupConfiguration"];
    assert_eq!(wg["EnforceWorkGroupConfiguration"], true);
    let results = export_bucket_sub(&wg["ResultConfiguration"]["OutputLocation"]);
    assert!(
        results.starts_with("s3://${Bucket}/${ExportPrefix}") && !results.contains("runs/"),
        "{results}"
    );
    assert_eq!(
        export_bucket_sub(&t["Outputs"]["ExportLocation"]["Value"]),
        "s3://${Bucket}/${ExportPrefix}"
    );
}

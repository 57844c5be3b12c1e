//! A first deploy in a new account, a teardown and a redeploy, as CloudFormation and SAM would
//! meet them: the template's `Rules` evaluated as CloudFormation does before a create, what SAM's
//! translator generates for each security and clean-up property, and the parameters SAM's own
//! deploy command would send (`infra/scripts/deploy.py --print-parameters`, which runs it with
//! its CloudFormation call stubbed) for every samconfig.toml environment.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::transformed::{broken, resources, root, statements, template, transform};

/// A parameter's value as CloudFormation resolves it: the override, else the default.
fn parameter(t: &Value, overrides: &BTreeMap<&str, &str>, name: &str) -> String {
    if let Some(v) = overrides.get(name) {
        return v.to_string();
    }
    match &t["Parameters"][name]["Default"] {
        Value::String(s) => s.clone(),
        Value::Null => panic!("{name}: no default and no value"),
        other => other.to_string(),
    }
}

/// One rule-specific intrinsic function, evaluated as CloudFormation does for `Rules`.
fn evaluate(v: &Value, t: &Value, overrides: &BTreeMap<&str, &str>) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    let (function, args) = m.iter().next().expect("an intrinsic");
    let arg = |i: usize| evaluate(&args[i], t, overrides);
    match function.as_str() {
        "Ref" => Value::String(parameter(t, overrides, args.as_str().unwrap())),
        "Fn::Equals" => Value::Bool(arg(0) == arg(1)),
        "Fn::Not" => Value::Bool(!arg(0).as_bool().unwrap()),
        "Fn::And" => {
            Value::Bool((0..args.as_array().unwrap().len()).all(|i| arg(i).as_bool().unwrap()))
        }
        "Fn::Or" => {
            Value::Bool((0..args.as_array().unwrap().len()).any(|i| arg(i).as_bool().unwrap()))
        }
        "Fn::Contains" => {
            let list = arg(0);
            Value::Bool(list.as_array().unwrap().contains(&arg(1)))
        }
        other => panic!("{other} is not evaluated here: extend the evaluator"),
    }
}

/// What the template's `Rules` refuse for these parameters (their descriptions).
fn refused(t: &Value, overrides: &[(&str, &str)]) -> Vec<String> {
    let overrides: BTreeMap<&str, &str> = overrides.iter().copied().collect();
    let mut out = Vec::new();
    for (name, rule) in t["Rules"].as_object().expect("the template has Rules") {
        let applies = rule
            .get("RuleCondition")
            .is_none_or(|c| evaluate(c, t, &overrides) == Value::Bool(true));
        if !applies {
            continue;
        }
        for assertion in rule["Assertions"].as_array().unwrap() {
            if evaluate(&assertion["Assert"], t, &overrides) != Value::Bool(true) {
                out.push(format!("{name}: {}", assertion["AssertDescription"]));
            }
        }
    }
    out
}

#[test]
fn the_rules_refuse_what_a_create_would_fail_on_and_nothing_else() {
    let t = transform(&template());
    assert_eq!(refused(&t, &[]), Vec::<String>::new(), "the defaults");
    for ok in [
        vec![("BatchSize", "10"), ("MaximumBatchingWindowInSeconds", "0")],
        vec![("BatchSize", "11"), ("MaximumBatchingWindowInSeconds", "1")],
        vec![
            ("BatchSize", "100"),
            ("MaximumBatchingWindowInSeconds", "20"),
        ],
        vec![
            ("ExistingResultsTableName", "r"),
            ("ExistingCheckpointTableName", "c"),
        ],
        vec![
            (
                "ExistingCloudinarySecretArn",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:cld-AbCdEf",
            ),
            (
                "CloudinarySecretKmsKeyArn",
                "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            ),
        ],
    ] {
        assert_eq!(refused(&t, &ok), Vec::<String>::new(), "{ok:?}");
    }
    for (bad, rule) in [
        (
            vec![("BatchSize", "11"), ("MaximumBatchingWindowInSeconds", "0")],
            "BatchingWindowForLargeBatches",
        ),
        (
            vec![
                ("BatchSize", "100"),
                ("MaximumBatchingWindowInSeconds", "0"),
            ],
            "BatchingWindowForLargeBatches",
        ),
        (
            vec![
                ("ExistingResultsTableName", "t"),
                ("ExistingCheckpointTableName", "t"),
            ],
            "DistinctExistingTables",
        ),
        (
            vec![(
                "CloudinarySecretKmsKeyArn",
                "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            )],
            "KeyOnlyWithExistingSecret",
        ),
    ] {
        let found = refused(&t, &bad);
        assert_eq!(found.len(), 1, "{bad:?}: {found:?}");
        assert!(found[0].starts_with(rule), "{bad:?}: {found:?}");
    }
}

/// The parameters' own patterns, as CloudFormation applies them (anchored).
#[test]
fn a_secret_is_named_by_its_arn_and_its_key_by_a_key_arn() {
    let t = transform(&template());
    let pattern = |name: &str| {
        regex::Regex::new(t["Parameters"][name]["AllowedPattern"].as_str().unwrap()).unwrap()
    };
    let secret = pattern("ExistingCloudinarySecretArn");
    for ok in [
        "",
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/cloudinary-AbCdEf",
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:cld-AbCdEf",
    ] {
        assert!(secret.is_match(ok), "{ok}");
    }
    for bad in [
        "prod/cloudinary",
        "cloudinary-AbCdEf",
        "arn:aws:kms:eu-west-1:123456789012:key/x",
    ] {
        assert!(!secret.is_match(bad), "{bad}");
    }
    let key = pattern("CloudinarySecretKmsKeyArn");
    assert!(
        key.is_match("arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    );
    assert!(
        !key.is_match("alias/cloudinary"),
        "an alias is no key ARN for IAM"
    );
    let bucket = pattern("ExportBucketName");
    assert!(bucket.is_match("my-exports") && bucket.is_match(""));
    assert!(!bucket.is_match("s3://my-exports") && !bucket.is_match("my-exports/ocr"));
}

/// Each function may decrypt with the secret's key, only when one is given and only through
/// Secrets Manager.
#[test]
fn a_secret_under_a_customer_key_can_be_read() {
    let t = transform(&template());
    for role in ["WorkerRole", "ListerRole"] {
        let policy = &t["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"];
        let guarded: Vec<&Value> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.get("Fn::If"))
            .collect();
        assert_eq!(guarded.len(), 1, "{role}");
        assert_eq!(guarded[0][0], "HasSecretKey", "{role}");
        assert_eq!(guarded[0][2], json!({"Ref": "AWS::NoValue"}), "{role}");
        let statement = &guarded[0][1];
        assert_eq!(statement["Action"], json!(["kms:Decrypt"]), "{role}");
        assert_eq!(
            statement["Resource"],
            json!({"Ref": "CloudinarySecretKmsKeyArn"})
        );
        assert_eq!(
            statement["Condition"]["StringEquals"]["kms:ViaService"],
            json!({"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"})
        );
    }
}

/// Resources of `kind` with no policy that denies requests made without TLS.
fn without_tls_only(t: &Value, kind: &str) -> Vec<String> {
    let (policy_kind, targets) = match kind {
        "AWS::SQS::Queue" => ("AWS::SQS::QueuePolicy", "Queues"),
        "AWS::SNS::Topic" => ("AWS::SNS::TopicPolicy", "Topics"),
        "AWS::S3::Bucket" => ("AWS::S3::BucketPolicy", "Bucket"),
        other => panic!("{other}"),
    };
    let mut missing = Vec::new();
    for (name, res) in resources(t).filter(|(_, r)| r["Type"] == kind) {
        let covered = resources(t).any(|(_, policy)| {
            let props = &policy["Properties"];
            let names_it = match &props[targets] {
                Value::Array(list) => list.contains(&json!({"Ref": name})),
                one => one == &json!({"Ref": name}),
            };
            policy["Type"] == policy_kind
                && names_it
                && policy.get("Condition") == res.get("Condition")
                && props["PolicyDocument"]["Statement"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| {
                        s["Effect"] == "Deny"
                            && s["Principal"] == "*"
                            && s["Condition"]["Bool"]["aws:SecureTransport"] == "false"
                            && s["Resource"].to_string().contains(name)
                    })
        });
        if !covered {
            missing.push(name.clone());
        }
    }
    missing
}

#[test]
fn queues_topic_and_bucket_refuse_requests_without_tls() {
    let t = transform(&template());
    for kind in ["AWS::SQS::Queue", "AWS::SNS::Topic", "AWS::S3::Bucket"] {
        assert!(resources(&t).any(|(_, r)| r["Type"] == kind), "{kind}");
        assert_eq!(without_tls_only(&t, kind), Vec::<String>::new(), "{kind}");
    }
    let t = transform(&broken(
        "      Queues:\n        - !Ref WorkQueue\n        - !Ref ReadBackQueue\n        - !Ref DeadLetterQueue\n",
        "      Queues:\n        - !Ref WorkQueue\n",
    ));
    let mut uncovered = without_tls_only(&t, "AWS::SQS::Queue");
    uncovered.sort();
    assert_eq!(uncovered, vec!["DeadLetterQueue", "ReadBackQueue"]);
}

#[test]
fn the_export_bucket_the_stack_creates_is_private_encrypted_and_cleaned() {
    let t = transform(&template());
    let bucket = &t["Resources"]["ExportBucket"];
    assert_eq!(bucket["Condition"], "CreateExportBucket");
    let props = &bucket["Properties"];
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            props["PublicAccessBlockConfiguration"][flag], true,
            "{flag}"
        );
    }
    assert_eq!(
        props["OwnershipControls"]["Rules"][0]["ObjectOwnership"],
        "BucketOwnerEnforced"
    );
    let sse = &props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(
        sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );
    let rules = props["LifecycleConfiguration"]["Rules"].as_array().unwrap();
    assert!(
        rules.iter().any(|r| r["Status"] == "Enabled"
            && r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1),
        "what a killed export leaves is removed"
    );
}

/// `sam delete` succeeds once queries have run; a stack deleted and created again within a
/// minute is refused only by SQS's own rule (README).
#[test]
fn a_stack_with_queries_can_be_deleted() {
    let t = transform(&template());
    assert_eq!(
        t["Resources"]["ExportWorkGroup"]["Properties"]["RecursiveDeleteOption"],
        true
    );
}

/// A lister run is never retried by Lambda (the next scheduled run continues), and only this
/// account's schedules may assume the schedule's role.
#[test]
fn the_lister_is_invoked_once_per_schedule_by_this_account_only() {
    let t = transform(&template());
    let invoke = resources(&t)
        .find(|(_, r)| r["Type"] == "AWS::Lambda::EventInvokeConfig")
        .map(|(_, r)| &r["Properties"])
        .expect("an EventInvokeConfig");
    assert_eq!(invoke["FunctionName"], json!({"Ref": "ListerFunction"}));
    assert_eq!(invoke["MaximumRetryAttempts"], 0);
    let schedule = resources(&t)
        .find(|(_, r)| r["Type"] == "AWS::Scheduler::Schedule")
        .map(|(_, r)| &r["Properties"])
        .unwrap();
    let role = schedule["Target"]["RoleArn"]["Fn::GetAtt"][0]
        .as_str()
        .unwrap();
    let role = &t["Resources"][role];
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1);
    assert_eq!(trust[0]["Principal"]["Service"], "scheduler.amazonaws.com");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );
    let granted: Vec<&Value> = statements(role).collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["Action"], json!(["lambda:InvokeFunction"]));
    assert_eq!(
        granted[0]["Resource"],
        json!({"Fn::GetAtt": ["ListerFunction", "Arn"]})
    );
}

/// What `deploy.py ENV ARGS --print-parameters MODE` says SAM would send, run in a copy of the
/// project's template and samconfig.toml (`samconfig` replaces the latter when given).
fn would_send(env: &str, args: &[&str], mode: &str, samconfig: Option<&str>) -> Value {
    let root = root();
    let dir = std::env::temp_dir().join(format!("deploy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root.join("template.yaml"), dir.join("template.yaml")).unwrap();
    let config = match samconfig {
        Some(text) => text.to_string(),
        None => std::fs::read_to_string(root.join("samconfig.toml")).unwrap(),
    };
    std::fs::write(dir.join("samconfig.toml"), config).unwrap();
    let python = root.join(".venv-tools/bin/python");
    assert!(python.exists(), "`make tools` creates {}", python.display());
    let out = Command::new(python)
        .current_dir(&dir)
        .arg(root.join("infra/scripts/deploy.py"))
        .arg(env)
        .args(args)
        .args(["--print-parameters", mode])
        .env("SAM_CLI_TELEMETRY", "0")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("running deploy.py");
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "deploy.py {env} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("deploy.py prints JSON")
}

/// The parameters sent with a value, by name.
fn values(sent: &Value) -> BTreeMap<String, String> {
    sent["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            Some((
                p["ParameterKey"].as_str()?.to_string(),
                p.get("ParameterValue")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

fn environments(samconfig: &str) -> BTreeSet<String> {
    let header = regex::Regex::new(r"(?m)^\[([A-Za-z0-9_-]+)\.deploy\.parameters\]").unwrap();
    header
        .captures_iter(samconfig)
        .map(|c| c[1].to_string())
        .collect()
}

/// A new account's Lambda concurrency quota is often 10, and 100 must stay unreserved: an
/// environment that reserves concurrency cannot be created there.
#[test]
fn every_environment_can_be_created_in_a_new_account() {
    let samconfig = std::fs::read_to_string(root().join("samconfig.toml")).unwrap();
    let envs = environments(&samconfig);
    assert!(
        envs.contains("default") && envs.contains("prod"),
        "{envs:?}"
    );
    let t = transform(&template());
    for env in envs {
        let sent = would_send(&env, &[], "create", None);
        assert_eq!(sent["type"], "CREATE");
        let sent = values(&sent);
        let reserve = sent
            .get("ReserveConcurrency")
            .cloned()
            .unwrap_or_else(|| parameter(&t, &BTreeMap::new(), "ReserveConcurrency"));
        assert_eq!(
            reserve, "false",
            "[{env}] reserves concurrency a new account lacks"
        );
        // And the Rules accept what it sends.
        let overrides: Vec<(&str, &str)> =
            sent.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(refused(&t, &overrides), Vec::<String>::new(), "[{env}]");
    }
}

/// The README's teardown and redeploy: the kept resources' names added to the environment's
/// `parameter_overrides`, and a create sends every setting of the environment with them.
#[test]
fn a_redeploy_onto_the_kept_resources_keeps_every_setting() {
    let samconfig = std::fs::read_to_string(root().join("samconfig.toml")).unwrap();
    let before = values(&would_send("prod", &[], "create", None));
    assert!(before.contains_key("WorkerConcurrency"), "{before:?}");
    assert!(!before.contains_key("ExistingResultsTableName"));
    let kept = [
        (
            "ExistingResultsTableName",
            "cloudinary-ocr-prod-ResultsTable-1X2Y3Z",
        ),
        (
            "ExistingCheckpointTableName",
            "cloudinary-ocr-prod-CheckpointTable-4A5B6C",
        ),
        (
            "ExistingCloudinarySecretArn",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:CloudinarySecret-AbCdEf",
        ),
        (
            "ExportBucketName",
            "cloudinary-ocr-prod-exportbucket-7d8e9f",
        ),
    ];
    let line = regex::Regex::new(
        r#"(?ms)(\[prod\.deploy\.parameters\].*?parameter_overrides = ")([^"]*)""#,
    )
    .unwrap();
    let addition: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let edited = line.replace(&samconfig, |c: &regex::Captures| {
        format!("{}{} {}\"", &c[1], &c[2], addition.join(" "))
    });
    assert_ne!(
        edited, samconfig,
        "the prod environment's parameter_overrides line"
    );
    for mode in ["create", "update"] {
        let sent = would_send("prod", &[], mode, Some(&edited));
        let after = values(&sent);
        for (k, v) in &before {
            assert_eq!(after.get(k), Some(v), "{mode}: {k} lost");
        }
        for (k, v) in kept {
            assert_eq!(after.get(k).map(String::as_str), Some(v), "{mode}: {k}");
        }
    }
}

/// `make deploy PARAMS='...'`: a value given on the command line changes that value only.
#[test]
fn a_value_given_at_deploy_adds_to_the_environment() {
    let before = values(&would_send("prod", &[], "create", None));
    let after = values(&would_send(
        "prod",
        &[
            "AlarmEmail=ops@example.com",
            "ScopeExpression=tags=invoice AND format=png",
        ],
        "create",
        None,
    ));
    assert_eq!(after["AlarmEmail"], "ops@example.com");
    assert_eq!(after["ScopeExpression"], "tags=invoice AND format=png");
    for (k, v) in &before {
        assert_eq!(after.get(k), Some(v), "{k} lost");
    }
    // An update sends what it is not given as the stack's previous value.
    let update = would_send("prod", &["AlarmEmail=ops@example.com"], "update", None);
    let previous: Vec<&str> = update["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["UsePreviousValue"] == true)
        .map(|p| p["ParameterKey"].as_str().unwrap())
        .collect();
    assert!(
        previous.contains(&"ExistingResultsTableName"),
        "{previous:?}"
    );
    assert!(!previous.contains(&"AlarmEmail"));
}

#[test]
fn a_misspelt_parameter_is_refused_before_sam_runs() {
    let root = root();
    let out = Command::new(root.join(".venv-tools/bin/python"))
        .current_dir(&root)
        .args([
            "infra/scripts/deploy.py",
            "prod",
            "WorkerConcurency=30",
            "--print-parameters",
            "create",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a template parameter: WorkerConcurency"),
        "{err}"
    );
    assert!(Path::new(&root.join("infra/scripts/deploy.py")).exists());
}

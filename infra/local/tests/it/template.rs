//! `template.yaml`'s invariants, the ones cfn-lint cannot see; and proof that breaking any of
//! them fails this test.

use std::time::Duration;

use local_stack::template::{TEMPLATE, Template};

#[test]
fn the_template_keeps_every_invariant() {
    let t = Template::parse(TEMPLATE).unwrap();
    assert_eq!(t.violations(), Vec::<String>::new());
}

#[test]
fn the_local_stack_takes_its_settings_from_the_template() {
    let s = Template::parse(TEMPLATE).unwrap().stack_settings().unwrap();
    assert_eq!(s.worker_timeout, Duration::from_secs(150));
    assert_eq!(s.visibility_timeout, Duration::from_secs(900));
    assert_eq!(
        (s.max_receive_count, s.batch_size, s.worker_concurrency),
        (5, 50, 4)
    );
    assert_eq!(s.dlq_retention, Duration::from_secs(14 * 24 * 3600));
    assert_eq!(
        (
            s.read_back_batch_size,
            s.read_back_window,
            s.read_back_concurrency
        ),
        (99, Duration::from_secs(120), 4)
    );
    // The simulation runs the read-back queue's event source as the template sets it.
    use local_stack::sim;
    assert_eq!(
        (
            s.read_back_batch_size as usize,
            s.read_back_window,
            s.read_back_concurrency
        ),
        (
            sim::READ_BACK_BATCH,
            sim::READ_BACK_WINDOW,
            sim::READ_BACK_CONCURRENCY as usize
        )
    );
    let d = crate::common::stack_settings();
    assert_eq!(
        (d.visibility_timeout, d.max_receive_count),
        (s.visibility_timeout, s.max_receive_count)
    );
}

/// The code's defaults (what a function does when a variable is unset, what the local runner
/// uses) are the template's.
#[test]
fn the_template_says_what_the_code_defaults_to() {
    use shared::defaults as d;
    let t = Template::parse(TEMPLATE).unwrap();
    let s = t.stack_settings().unwrap();
    assert_eq!(s.worker_timeout, d::WORKER_TIMEOUT);
    assert_eq!(s.visibility_timeout, d::VISIBILITY_TIMEOUT);
    assert_eq!(s.max_receive_count, d::MAX_RECEIVE_COUNT);
    assert_eq!(s.batch_size, d::BATCH_SIZE);
    // A read-back batch and its canary are one Admin API call.
    assert_eq!(
        s.read_back_batch_size as usize,
        shared::worker::READ_BACK_BATCH
    );
    let param = |name: &str| {
        t.parameter_default(name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(
        param("WorkerRecordConcurrency"),
        d::RECORDS_IN_FLIGHT as f64
    );
    assert_eq!(param("ListerPageSize"), f64::from(d::PAGE_SIZE));
    assert_eq!(param("MaxReceiveCount"), f64::from(d::MAX_RECEIVE_COUNT));
    assert_eq!(param("BatchSize"), f64::from(d::BATCH_SIZE));
    assert_eq!(
        param("PassIntervalHours"),
        d::PASS_INTERVAL.as_secs_f64() / 3600.0
    );
    assert_eq!(
        param("FullPassIntervalDays"),
        d::FULL_PASS_INTERVAL.as_secs_f64() / 86_400.0
    );
    assert_eq!(
        param("IncrementalOverlapMinutes"),
        d::INCREMENTAL_OVERLAP.as_secs_f64() / 60.0
    );
    // A record is started only with time to finish its call before the function's timeout.
    assert!(d::CLOUDINARY_TIMEOUT + d::WORKER_DEADLINE_SLACK < d::WORKER_TIMEOUT);
}

/// Each mutation breaks one invariant; the check must name it.
#[test]
fn a_broken_template_is_caught() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "    MinValue: 2\n    MaxValue: 200\n",
            "    MinValue: 1\n    MaxValue: 200\n",
            "MaximumConcurrency can be below 2",
        ),
        (
            "              - ReportBatchItemFailures\n            ScalingConfig:\n              MaximumConcurrency: 4\n",
            "              - ReportBatchItemFailure\n            ScalingConfig:\n              MaximumConcurrency: 4\n",
            "ReadBack's FunctionResponseTypes",
        ),
        (
            "      QueueName: !Sub ${AWS::StackName}-read-back\n      VisibilityTimeout: 900",
            "      QueueName: !Sub ${AWS::StackName}-read-back\n      VisibilityTimeout: 150",
            "ReadBackQueue: VisibilityTimeout 150 is below 6 x the worker's timeout",
        ),
        (
            "      # At least six times the worker's timeout (150 s), as Lambda's SQS guidance asks.\n      VisibilityTimeout: 900",
            "      VisibilityTimeout: 150",
            "WorkQueue: VisibilityTimeout 150 is below 6 x the worker's timeout",
        ),
        (
            "      QueueName: !Sub ${AWS::StackName}-read-back\n      VisibilityTimeout: 900\n      MessageRetentionPeriod: 1209600\n      SqsManagedSseEnabled: true\n      RedrivePolicy:\n        deadLetterTargetArn: !GetAtt DeadLetterQueue.Arn\n        maxReceiveCount: !Ref MaxReceiveCount",
            "      QueueName: !Sub ${AWS::StackName}-read-back\n      VisibilityTimeout: 900\n      MessageRetentionPeriod: 1209600\n      SqsManagedSseEnabled: true\n      RedrivePolicy:\n        deadLetterTargetArn: !GetAtt DeadLetterQueue.Arn\n        maxReceiveCount: 8",
            "ReadBackQueue: maxReceiveCount must be the work queue's",
        ),
        (
            "    Default: 5\n    MinValue: 5\n",
            "    Default: 5\n    MinValue: 0\n",
            "maxReceiveCount can be 0",
        ),
        (
            "    Runtime: provided.al2023",
            "    Runtime: provided.al2",
            "Runtime must be provided.al2023",
        ),
        (
            "    Architectures: [arm64]",
            "    Architectures: [x86_64]",
            "Architectures must be [arm64]",
        ),
        (
            "        redrivePermission: byQueue",
            "        redrivePermission: denyAll",
            "RedriveAllowPolicy",
        ),
        (
            "                - dynamodb:BatchGetItem",
            "                - dynamodb:*",
            "wildcard IAM action",
        ),
        (
            "      QueueName: !Sub ${AWS::StackName}-work",
            "      QueueName: ocr-work",
            "derived from the stack name",
        ),
        (
            "  WorkerFunction:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildMethod: rust-cargolambda\n",
            "  WorkerFunction:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildMethod: makefile\n",
            "BuildMethod must be rust-cargolambda",
        ),
        (
            "      MessageRetentionPeriod: 1209600\n      SqsManagedSseEnabled: true\n      # Built",
            "      MessageRetentionPeriod: 345600\n      SqsManagedSseEnabled: true\n      # Built",
            "14 days",
        ),
        (
            "            ScalingConfig:\n              MaximumConcurrency: !Ref WorkerConcurrency",
            "            ScalingConfig:\n              MaximumConcurrency: 50",
            "throttled poller",
        ),
        (
            "              MaximumConcurrency: 4\n",
            "              MaximumConcurrency: 5\n",
            "toward the DLQ (at 2 work pollers and 5 more)",
        ),
        (
            "    MinValue: 2\n    MaxValue: 200\n",
            "    MinValue: 2\n    MaxValue: 201\n",
            "toward the DLQ (at 201 work pollers",
        ),
        (
            "      Table: \"4,5,6,7,8,9,",
            "      Table: \"4,5,6,7,7,9,",
            "toward the DLQ (at 4 work pollers",
        ),
        (
            "            Queue: !GetAtt ReadBackQueue.Arn\n",
            "            Queue: !GetAtt WorkQueue.Arn\n",
            "ReadBack must read ReadBackQueue",
        ),
    ];
    for (from, to, expected) in cases {
        assert_eq!(
            TEMPLATE.matches(from).count(),
            1,
            "mutation anchor {from:?} must be unique"
        );
        let broken = TEMPLATE.replace(from, to);
        let violations = Template::parse(&broken).unwrap().violations();
        assert!(
            violations.iter().any(|v| v.contains(expected)),
            "breaking {from:?} was not caught (expected {expected:?}); got {violations:?}"
        );
    }
}

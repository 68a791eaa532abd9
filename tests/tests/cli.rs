//! The `cairn` command line as a person or a script uses it: topics made, listed, described;
//! lines piped through `topic produce` and back out of `topic consume`; `cluster info`; and the
//! load tool against a real broker and against its do-nothing baseline.
//!
//! Every command runs as a process against a `TestBroker`; waits are on process exit, with a
//! deadline that kills a hung command.

use std::process::Output;
use std::time::Duration;

use cairn_tests::{TestBroker, run_cli};
use serde_json::Value;

/// How long any one command may take before the test calls it hung.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cairn args...` against `broker` with `stdin` piped in, and returns its output.
fn run(broker: &TestBroker, args: &[&str], stdin: &str) -> Output {
    run_cli(&broker.addr().to_string(), args, stdin, DEADLINE)
        .unwrap_or_else(|e| panic!("cairn {args:?}: {e:#}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(broker: &TestBroker, args: &[&str], stdin: &str) -> String {
    let o = run(broker, args, stdin);
    assert!(
        o.status.success(),
        "cairn {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

#[test]
fn lines_produced_come_back_in_order() {
    let broker = TestBroker::start().unwrap();
    ok(&broker, &["topic", "create", "lines", "-p", "1"], "");
    let lines: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
    let input = lines.join("\n") + "\n";
    let o = run(&broker, &["topic", "produce", "lines"], &input);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary = text(&o.stderr);
    assert!(summary.contains("500 records"), "{summary}");
    assert!(summary.contains("0@0..=499"), "{summary}");

    let out = ok(
        &broker,
        &["topic", "consume", "lines", "-o", "start", "-e"],
        "",
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), lines);

    let tail = ok(
        &broker,
        &["topic", "consume", "lines", "-o", "-2", "-e"],
        "",
    );
    assert_eq!(tail, "line 498\nline 499\n");
    let from = ok(
        &broker,
        &["topic", "consume", "lines", "-o", "497", "-e"],
        "",
    );
    assert_eq!(from.lines().count(), 3, "{from}");
    // Without -e the consumer follows the tail; -n stops it.
    let first = ok(&broker, &["topic", "consume", "lines", "-n", "3"], "");
    assert_eq!(first, "line 0\nline 1\nline 2\n");
    // At the end already: -e exits at once with nothing.
    let none = ok(
        &broker,
        &["topic", "consume", "lines", "-o", "end", "-e"],
        "",
    );
    assert_eq!(none, "");
}

#[test]
fn json_output_is_one_object_per_line() {
    let broker = TestBroker::start().unwrap();
    ok(&broker, &["topic", "create", "js"], "");
    ok(&broker, &["topic", "produce", "js"], "alpha\nbeta\n");
    let out = ok(
        &broker,
        &["topic", "consume", "js", "-e", "--format", "json"],
        "",
    );
    let records = json_lines(&out);
    assert_eq!(records.len(), 2, "{out}");
    for (i, (r, value)) in records.iter().zip(["alpha", "beta"]).enumerate() {
        assert_eq!(r["topic"], "js");
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], i as i64);
        assert_eq!(r["value"], value);
        assert!(r["key"].is_null());
        assert!(r["timestamp"].as_i64().unwrap() > 0);
        assert_eq!(r["headers"], Value::Array(vec![]));
    }
}

#[test]
fn keys_and_headers_round_trip() {
    let broker = TestBroker::start().unwrap();
    ok(&broker, &["topic", "create", "kv"], "");
    let produce = [
        "topic", "produce", "kv", "-k", "::", "-H", "a=1", "-H", "b=x=y",
    ];
    ok(&broker, &produce, "k1::v1\nk2::v2::more\nnokey\n");
    let out = ok(
        &broker,
        &["topic", "consume", "kv", "-e", "-f", r"%k=%v %h|%p/%o\n"],
        "",
    );
    assert_eq!(
        out,
        "k1=v1 a=1,b=x=y|0/0\nk2=v2::more a=1,b=x=y|0/1\n=nokey a=1,b=x=y|0/2\n"
    );
    let out = ok(
        &broker,
        &["topic", "consume", "kv", "-e", "--format", "json"],
        "",
    );
    let records = json_lines(&out);
    assert_eq!(records[0]["key"], "k1");
    assert_eq!(records[0]["value"], "v1");
    assert_eq!(records[0]["headers"][1]["key"], "b");
    assert_eq!(records[0]["headers"][1]["value"], "x=y");
    assert!(records[2]["key"].is_null());
}

#[test]
fn bad_requests_fail_with_a_message() {
    let broker = TestBroker::start().unwrap();
    ok(&broker, &["topic", "create", "dup"], "");
    let o = run(&broker, &["topic", "create", "dup"], "");
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("already exists"),
        "{}",
        text(&o.stderr)
    );

    let o = run(
        &broker,
        &["topic", "create", "cfg", "-c", "colour=blue"],
        "",
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unknown config key"),
        "{}",
        text(&o.stderr)
    );

    let o = run(&broker, &["topic", "consume", "missing", "-e"], "");
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("missing"), "{}", text(&o.stderr));

    // Usage errors exit 2, as clap does.
    let o = run(&broker, &["topic", "create"], "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn list_and_describe_show_the_topic() {
    let broker = TestBroker::start().unwrap();
    let addr = broker.addr().to_string();
    let created = [
        "topic",
        "create",
        "--brokers",
        &addr,
        "orders",
        "-p",
        "3",
        "-c",
        "retention_ms=60000",
        "-c",
        "fsync=never",
    ];
    ok(&broker, &created, "");
    ok(
        &broker,
        &["topic", "produce", "orders", "-p", "2"],
        "x\ny\n",
    );

    let list = ok(&broker, &["topic", "list"], "");
    assert!(list.starts_with("NAME"), "{list}");
    let row: Vec<&str> = list
        .lines()
        .find(|l| l.starts_with("orders"))
        .unwrap_or_else(|| panic!("orders missing from {list}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["orders", "3", "1"]);

    let described = ok(&broker, &["topic", "describe", "orders"], "");
    assert!(described.contains("HIGH-WATERMARK"), "{described}");
    assert!(described.contains("retention_ms"), "{described}");
    let partition_rows = described
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION "))
        .skip(1)
        .count();
    assert_eq!(partition_rows, 3, "{described}");

    let json = ok(
        &broker,
        &["topic", "describe", "orders", "--format", "json"],
        "",
    );
    let topic: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(topic["name"], "orders");
    assert_eq!(topic["config"]["retention_ms"], "60000");
    assert_eq!(topic["config"]["fsync"], "never");
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(topic["partitions"][2]["high_watermark"], 2);

    let listed = ok(&broker, &["topic", "list", "--format", "json"], "");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["name"], "orders");

    ok(&broker, &["topic", "delete", "orders"], "");
    let list = ok(&broker, &["topic", "list"], "");
    assert!(!list.contains("orders"), "{list}");
}

#[test]
fn cluster_info_marks_the_controller() {
    let broker = TestBroker::start().unwrap();
    let info = ok(&broker, &["cluster", "info"], "");
    assert!(info.contains("BROKERS"), "{info}");
    let row = info
        .lines()
        .find(|l| l.contains(&broker.addr().to_string()))
        .unwrap_or_else(|| panic!("broker missing from {info}"));
    assert!(row.starts_with("1*"), "{info}");
    let json: Value =
        serde_json::from_str(&ok(&broker, &["cluster", "info", "--format", "json"], "")).unwrap();
    assert_eq!(json["controller_id"], 1);
    assert_eq!(json["brokers"][0]["alive"], true);
    assert!(!json["cluster_id"].as_str().unwrap().is_empty());
}

fn bench(broker: &TestBroker, args: &[&str]) -> Value {
    let out = ok(broker, args, "");
    let report: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: bench printed {out:?}"));
    assert!(
        report["records_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(report["mb_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let p50 = report["latency_ms"]["p50"].as_f64().unwrap();
    let max = report["latency_ms"]["max"].as_f64().unwrap();
    assert!(p50 > 0.0 && max >= p50, "{report}");
    report
}

#[test]
fn bench_measures_the_broker_and_the_baseline() {
    let broker = TestBroker::start().unwrap();
    let produce = ["bench", "produce", "--records", "2000", "--json"];
    let report = bench(&broker, &produce);
    assert_eq!(report["records"], 2000);
    assert_eq!(report["baseline"], false);
    assert_eq!(report["bytes"], 2000 * 1024);

    let two = [
        "bench",
        "produce",
        "--topic",
        "b2",
        "--partitions",
        "2",
        "--producers",
        "2",
        "--records",
        "2000",
        "--record-size",
        "100",
        "--acks",
        "leader",
        "--json",
    ];
    assert_eq!(bench(&broker, &two)["partitions"], 2);

    let report = bench(
        &broker,
        &[
            "bench",
            "produce",
            "--records",
            "2000",
            "--json",
            "--baseline",
        ],
    );
    assert_eq!(report["records"], 2000);
    assert_eq!(report["baseline"], true);

    // Reads the 2000 records written above (filling only what is missing).
    let report = bench(
        &broker,
        &["bench", "consume", "--records", "3000", "--json"],
    );
    assert_eq!(report["records"], 3000);
    let report = bench(
        &broker,
        &[
            "bench",
            "consume",
            "--records",
            "3000",
            "--json",
            "--baseline",
        ],
    );
    assert!(report["records"].as_u64().unwrap() >= 3000, "{report}");

    // The human table.
    let table = ok(&broker, &["bench", "produce", "--records", "500"], "");
    assert!(
        table.contains("RECORDS/S") && table.contains("P999"),
        "{table}"
    );
}

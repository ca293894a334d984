//! Prometheus exposition through the built binary: the series an operator alerts on move as
//! breakers, halts and calls do, with no per-account label.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

use common::process::{free_port, lines, riskgate, signal, wait_for, Running};

use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::*;

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the series whose line starts with `series` (name and labels as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn cli(args: &[&str], addr: &str) {
    let output = riskgate()
        .args(args)
        .args(["--addr", addr])
        .env("USER", "ops")
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_follow_breakers_halts_and_calls() {
    let (grpc, metrics) = (free_port(), free_port());
    let addr = format!("http://127.0.0.1:{grpc}");
    let mut server = Running(
        riskgate()
            .arg("serve")
            .env("RISKGATE__SERVER__LISTEN", format!("127.0.0.1:{grpc}"))
            .env("RISKGATE__METRICS__LISTEN", format!("127.0.0.1:{metrics}"))
            .env("RISKGATE__STORE__KIND", "memory")
            .env("RISKGATE__BREAKER__FAILURE_THRESHOLD", "2")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    wait_for(&logs, "riskgate serving");

    let mut gate = GateServiceClient::connect(addr.clone())
        .await
        .expect("connect");
    for _ in 0..2 {
        gate.report_outcome(ReportOutcomeRequest {
            account_id: "ACC-1".into(),
            outcome: Outcome::Failure as i32,
            failure_kind: FailureKind::OrderRejected as i32,
            ..Default::default()
        })
        .await
        .expect("report");
    }
    let denied = gate
        .check_trade(CheckTradeRequest {
            account_id: "ACC-1".into(),
            ..Default::default()
        })
        .await
        .expect("check")
        .into_inner();
    assert!(!denied.allowed);
    gate.check_trade(CheckTradeRequest {
        account_id: "ACC-2".into(),
        ..Default::default()
    })
    .await
    .expect("check");
    cli(&["halt", "--reason", "drill"], &addr);

    let text = scrape(metrics);
    let expect = |series: &str, wanted: f64| {
        assert_eq!(value(&text, series), Some(wanted), "{series} in\n{text}");
    };
    expect(
        "riskgate_checks_total{decision=\"denied\",layer=\"account\",reason=\"breaker_open\"}",
        1.0,
    );
    expect(
        "riskgate_checks_total{decision=\"allowed\",layer=\"none\",reason=\"none\"}",
        1.0,
    );
    expect(
        "riskgate_outcomes_total{result=\"failure\",kind=\"order_rejected\",disposition=\"recorded\"}",
        2.0,
    );
    expect(
        "riskgate_transitions_total{from=\"closed\",to=\"open\",cause=\"failure_threshold_reached\"}",
        1.0,
    );
    expect("riskgate_breakers{state=\"open\"}", 1.0);
    expect("riskgate_breakers{state=\"closed\"}", 1.0);
    expect("riskgate_firm_halted", 1.0);
    assert!(
        value(&text, "riskgate_check_seconds_count").is_some_and(|n| n >= 2.0),
        "{text}"
    );
    assert!(!text.contains("ACC-1"), "no per-account label");

    signal(&server, "TERM");
    assert!(server.wait().expect("exit").success());
}

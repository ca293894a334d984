//! Hot reload through the built binary: SIGHUP and a change of the configuration file put new
//! settings in force while calls are in flight; a configuration that does not validate is
//! refused and the one in force stays; no breaker loses anything.

mod common;

use std::process::Stdio;

use common::process::{free_port, lines, riskgate, signal, wait_for, Running};
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::*;

const TASKS: usize = 8;
const FAILURES_EACH: u32 = 150;

fn config(threshold: i64) -> String {
    format!(
        "[store]\nkind = \"memory\"\n[breaker]\nfailure_threshold = {threshold}\nfailure_window_secs = 3600.0\n"
    )
}

async fn version(addr: &str) -> (String, String) {
    let mut admin = AdminServiceClient::connect(addr.to_owned())
        .await
        .expect("connect");
    let config = admin
        .get_config(GetConfigRequest {})
        .await
        .expect("GetConfig")
        .into_inner();
    (config.version, config.toml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_changes_settings_and_loses_nothing() {
    let listen = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{listen}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("riskgate.toml");
    std::fs::write(&file, config(1_000)).expect("write config");
    let mut server = Running(
        riskgate()
            .args(["serve", "--config"])
            .arg(&file)
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    wait_for(&logs, "riskgate serving");
    let (first, _) = version(&addr).await;

    // Load: every task reports failures on its own account, checking before each.
    let load: Vec<_> = (0..TASKS)
        .map(|task| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut gate = GateServiceClient::connect(addr).await.expect("connect");
                let account = format!("LOAD-{task}");
                for _ in 0..FAILURES_EACH {
                    let check = gate
                        .check_trade(CheckTradeRequest {
                            account_id: account.clone(),
                            ..Default::default()
                        })
                        .await
                        .expect("CheckTrade during reloads")
                        .into_inner();
                    assert!(check.allowed, "{check:?}");
                    let report = gate
                        .report_outcome(ReportOutcomeRequest {
                            account_id: account.clone(),
                            permit_id: check.permit_id,
                            outcome: Outcome::Failure as i32,
                            ..Default::default()
                        })
                        .await
                        .expect("ReportOutcome during reloads")
                        .into_inner();
                    assert_eq!(report.disposition, OutcomeDisposition::Recorded as i32);
                }
            })
        })
        .collect();

    // SIGHUP.
    std::fs::write(&file, config(900)).expect("write config");
    signal(&server, "HUP");
    wait_for(&logs, "configuration reloaded");
    // A change of the file alone.
    std::fs::write(&file, config(800)).expect("write config");
    wait_for(&logs, "configuration reloaded");
    let (second, toml) = version(&addr).await;
    assert_ne!(first, second);
    assert!(toml.contains("failure_threshold = 800"), "{toml}");
    // A configuration that does not validate is refused; the one in force stays.
    std::fs::write(&file, config(0)).expect("write config");
    signal(&server, "HUP");
    let refused = wait_for(&logs, "configuration reload refused");
    assert!(
        refused
            .last()
            .is_some_and(|l| l.contains("failure_threshold")),
        "{refused:?}"
    );
    assert_eq!(version(&addr).await.0, second);

    for task in load {
        task.await.expect("load task");
    }
    let mut monitor = MonitorServiceClient::connect(addr.clone())
        .await
        .expect("connect");
    for task in 0..TASKS {
        let breaker = monitor
            .get_breaker(GetBreakerRequest {
                account_id: format!("LOAD-{task}"),
            })
            .await
            .expect("GetBreaker")
            .into_inner()
            .breaker
            .expect("breaker");
        assert_eq!(breaker.failure_count, FAILURES_EACH, "every failure kept");
        assert_eq!(
            breaker.settings.expect("settings").failure_threshold,
            800,
            "the reloaded threshold is in force"
        );
    }
    signal(&server, "TERM");
    let status = server.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

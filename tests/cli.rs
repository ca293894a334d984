//! End to end through the built binary: `riskgate serve`, then the operator commands against
//! it, then SIGTERM.

mod common;

use std::process::{Output, Stdio};

use common::process::{free_port, lines, riskgate, signal, wait_for, Running};

fn run(args: &[&str], addr: &str) -> Output {
    riskgate()
        .args(args)
        .args(["--addr", addr])
        .env("USER", "ops")
        .output()
        .expect("run riskgate")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn serve_then_status_trip_watch_reset_and_sigterm() {
    let listen = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{listen}");
    let data = tempfile::tempdir().expect("data directory");
    let mut server = Running(
        riskgate()
            .arg("serve")
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .env("RISKGATE__STORE__PATH", data.path())
            .env("RISKGATE__LOG__FORMAT", "json")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    let started = wait_for(&logs, "riskgate serving");
    assert!(
        started.last().is_some_and(|l| l.starts_with('{')),
        "JSON logs: {started:?}"
    );

    let status = stdout(&run(&["status"], &addr));
    assert!(status.contains("no breakers yet"), "{status}");
    assert_eq!(stdout(&run(&["health"], &addr)).trim(), "riskgate: SERVING");
    let gate = run(&["health", "--service", "riskgate.v1.GateService"], &addr);
    assert_eq!(stdout(&gate).trim(), "riskgate.v1.GateService: SERVING");
    let unknown = run(&["health", "--service", "no.such.Service"], &addr);
    assert!(!unknown.status.success());

    // An account never seen is refused as a likely typo, and nothing is created; --new acts.
    let typo = run(&["trip", "ACC-1", "--reason", "runaway algo"], &addr);
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("ACC-1 has never been seen by riskgate")
            && String::from_utf8_lossy(&typo.stderr).contains("pass --new"),
        "{typo:?}"
    );
    assert!(stdout(&run(&["status"], &addr)).contains("no breakers yet"));
    let tripped = stdout(&run(
        &[
            "trip",
            "ACC-1",
            "--new",
            "--reason",
            "runaway algo",
            "--operator",
            "alice",
        ],
        &addr,
    ));
    assert_eq!(tripped.trim(), "tripped ACC-1: now OPEN, held until reset");

    let mut watch = Running(
        riskgate()
            .args(["watch", "--addr", &addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start riskgate watch"),
    );
    let watched = lines(watch.stdout.take().expect("stdout"));
    let watch_errors = lines(watch.stderr.take().expect("stderr"));
    let snapshot = wait_for(&watched, "following");
    assert!(snapshot[0].contains("now ACC-1 OPEN"), "{snapshot:?}");
    assert!(
        snapshot[1].contains("1 breakers as of sequence 1"),
        "{snapshot:?}"
    );

    let reset = stdout(&run(
        &[
            "reset",
            "ACC-1",
            "--reason",
            "feed restored",
            "--operator",
            "alice",
        ],
        &addr,
    ));
    assert_eq!(reset.trim(), "reset ACC-1: now CLOSED");
    let event = wait_for(&watched, "#2");
    assert!(
        event.last().is_some_and(|l| l
            .contains("#2 ACC-1 OPEN -> CLOSED (operator reset): reset by alice: feed restored")),
        "{event:?}"
    );

    let table = stdout(&run(&["status"], &addr));
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("ACCOUNT")),
        "{table}"
    );
    assert!(
        table.contains("ACC-1") && table.contains("CLOSED"),
        "{table}"
    );
    let detail = stdout(&run(&["status", "ACC-1"], &addr));
    assert!(
        detail.contains("state        CLOSED") && detail.contains("last event   #2"),
        "{detail}"
    );

    // Refusals and an unreachable server: one line, non-zero exit, no backtrace.
    let refused = run(&["reset", "ACC-1", "--reason", " "], &addr);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        message.trim(),
        "riskgate: InvalidArgument: reason is required"
    );
    let unreachable = run(&["status"], &format!("127.0.0.1:{}", free_port()));
    assert!(!unreachable.status.success());
    let message = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.starts_with("riskgate: cannot reach riskgate at"),
        "{message}"
    );

    signal(&server, "TERM");
    let exit = server.wait().expect("server exit");
    assert!(
        !run(&["health"], &addr).status.success(),
        "no server, not healthy"
    );
    assert!(exit.success(), "serve exits 0 on SIGTERM: {exit:?}");
    let shutdown = wait_for(&logs, "riskgate stopped");
    assert!(
        shutdown.iter().any(|l| l.contains("SIGTERM received")),
        "{shutdown:?}"
    );
    // The watcher was told the server is going away, and where to resume.
    let ended = wait_for(&watch_errors, "stream ended");
    assert!(
        ended
            .last()
            .is_some_and(|l| l.contains("resume with after_sequence=2")),
        "{ended:?}"
    );

    // A new server on the same address with a fresh in-memory history: the watcher reconnects,
    // finds its resume point ahead of the new history, and starts over from a snapshot.
    let mut restarted = Running(
        riskgate()
            .arg("serve")
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .env("RISKGATE__STORE__KIND", "memory")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("restart riskgate serve"),
    );
    let restarted_logs = lines(restarted.stderr.take().expect("stderr"));
    wait_for(&restarted_logs, "riskgate serving");
    let notice = wait_for(&watch_errors, "fresh snapshot");
    assert!(
        notice
            .last()
            .is_some_and(|l| l.contains("ahead of the latest sequence 0")),
        "{notice:?}"
    );
    // It says it is back, not only that it is reconnecting.
    let back = wait_for(&watch_errors, "reconnected to");
    assert!(
        back.last()
            .is_some_and(|l| l.contains(&addr) && l.contains("reading a fresh snapshot")),
        "{back:?}"
    );
    wait_for(&watched, "0 breakers as of sequence 0; following");
    stdout(&run(
        &["trip", "ACC-9", "--new", "--reason", "after restart"],
        &addr,
    ));
    wait_for(&watched, "#1 ACC-9 CLOSED -> OPEN (operator trip)");

    signal(&watch, "INT");
    let exit = watch.wait().expect("watch exit");
    assert!(exit.success(), "watch exits 0 on Ctrl-C: {exit:?}");
    signal(&restarted, "TERM");
    assert!(restarted.wait().expect("server exit").success());
}

#[test]
fn invalid_configuration_stops_start_up_with_the_key_and_the_rule() {
    let output = riskgate()
        .arg("serve")
        .env("RISKGATE__BREAKER__FAILURE_THRESHOLD", "0")
        .output()
        .expect("run riskgate serve");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        message.trim(),
        "riskgate: invalid configuration: breaker.failure_threshold must be >= 1"
    );
}

#[test]
fn a_store_it_cannot_trust_stops_start_up_with_what_to_do() {
    let data = tempfile::tempdir().expect("data directory");
    std::fs::write(data.path().join("riskgate.db"), b"not a database").expect("write");
    let output = riskgate()
        .arg("serve")
        .env("RISKGATE__STORE__PATH", data.path())
        .env(
            "RISKGATE__SERVER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .output()
        .expect("run riskgate serve");
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("riskgate.db is not a riskgate store"),
        "{message}"
    );
    assert!(message.contains("never overwrites"), "{message}");
    assert_eq!(
        std::fs::read(data.path().join("riskgate.db")).expect("read"),
        b"not a database"
    );
}

#[test]
fn halt_resume_mode_timed_trip_and_config_from_the_command_line() {
    let listen = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{listen}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("riskgate.toml");
    std::fs::write(&file, "[groups.venue-x]\naccounts = [\"desk-a:*\"]\n").expect("config");
    let mut server = Running(
        riskgate()
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .env("RISKGATE__STORE__KIND", "memory")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    wait_for(&logs, "riskgate serving");

    let halted = stdout(&run(
        &[
            "halt",
            "--reason",
            "exchange incident",
            "--operator",
            "carol",
        ],
        &addr,
    ));
    assert!(
        halted.starts_with("HALTED firm-wide since")
            && halted.contains("by carol: exchange incident"),
        "{halted}"
    );
    // A status during a halt says so first, whatever the breakers say.
    let during = stdout(&run(&["status"], &addr));
    assert!(
        during.starts_with("HALTED firm-wide since")
            && during.contains("by carol: exchange incident"),
        "{during}"
    );
    // `riskgate halts`, for people and for scripts.
    let listed = stdout(&run(&["halts"], &addr));
    assert!(listed.starts_with("HALTED firm-wide since"), "{listed}");
    let listed = stdout(&run(&["halts", "--json"], &addr));
    let halts: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(halts.len(), 1, "{listed}");
    assert_eq!(halts[0]["scope"], "firm");
    assert_eq!(halts[0]["operator"], "carol");
    assert_eq!(halts[0]["reason"], "exchange incident");
    assert!(halts[0]["since"].as_str().is_some_and(|t| t.ends_with('Z')));
    let resumed = stdout(&run(&["resume", "--reason", "all clear"], &addr));
    assert_eq!(resumed.trim(), "resumed firm-wide");
    assert_eq!(stdout(&run(&["halts"], &addr)).trim(), "no halt in force");
    assert_eq!(stdout(&run(&["halts", "--json"], &addr)), "");
    let after = stdout(&run(&["status"], &addr));
    assert!(!after.contains("HALTED"), "{after}");
    let again = stdout(&run(&["resume", "--reason", "again"], &addr));
    assert_eq!(again.trim(), "firm-wide was not halted: nothing to resume");
    // Halting twice keeps the first responder's halt, and says so.
    stdout(&run(
        &["halt", "--reason", "first", "--operator", "dave"],
        &addr,
    ));
    let twice = stdout(&run(
        &["halt", "--reason", "second", "--operator", "erin"],
        &addr,
    ));
    assert!(
        twice.starts_with("firm-wide was already halted: that halt stays, as it was")
            && twice.contains("by dave: first")
            && !twice.contains("erin"),
        "{twice}"
    );
    stdout(&run(&["resume", "--reason", "clear"], &addr));

    let tripped = stdout(&run(
        &["trip", "ACC-2", "--new", "--for", "15m", "--reason", "news"],
        &addr,
    ));
    assert_eq!(
        tripped.trim(),
        "tripped ACC-2: now OPEN, held for 15m, then recovery is tested"
    );
    // A long hold reads as a date, and is remarked on.
    let long = run(
        &[
            "trip", "ACC-9", "--new", "--for", "100y", "--reason", "slip",
        ],
        &addr,
    );
    let said = stdout(&long);
    assert!(
        said.contains("held until recovery is tested on ") && said.contains(" days)"),
        "{said}"
    );
    let remark = String::from_utf8_lossy(&long.stderr);
    assert!(
        remark.contains("is held open for 365") && remark.contains("riskgate reset ACC-9"),
        "{remark}"
    );
    let status = stdout(&run(&["status", "ACC-9"], &addr));
    assert!(
        status.contains("recovery     21") && status.contains(" days)"),
        "{status}"
    );
    assert!(!status.contains("876"), "hours no one can read: {status}");
    let moded = stdout(&run(
        &["mode", "ACC-2", "shadow", "--reason", "trial"],
        &addr,
    ));
    assert_eq!(moded.trim(), "ACC-2: mode shadow (set by an operator)");
    let detail = stdout(&run(&["status", "ACC-2"], &addr));
    assert!(
        detail.contains("mode         shadow (set by an operator)")
            && detail.contains("opened by    operator trip")
            && detail.contains("tripped      held open by ")
            && detail.contains(" (news) until the recovery time"),
        "{detail}"
    );
    // The table shows every account's mode, and counts those not enforcing.
    let table = stdout(&run(&["status"], &addr));
    let row = table
        .lines()
        .find(|line| line.starts_with("ACC-2 "))
        .expect("ACC-2's row");
    assert!(
        table.lines().next().is_some_and(|h| h.contains("MODE"))
            && row.contains("shadow")
            && table.contains("1 not enforcing (shadow or disabled)"),
        "{table}"
    );
    let audit = stdout(&run(&["audit"], &addr));
    assert!(
        audit.contains("mode") && audit.contains("[shadow]") && audit.contains("(firm)"),
        "{audit}"
    );
    // Every record with --limit 0; as JSON lines for archiving; filtered by time.
    let table_lines = audit.lines().count();
    let all = stdout(&run(&["audit", "--limit", "0"], &addr));
    assert_eq!(all.lines().count(), table_lines, "{all}");
    assert!(!all.contains("no operator actions recorded"), "{all}");
    let jsonl = stdout(&run(
        &["audit", "--format", "jsonl", "--since", "1h"],
        &addr,
    ));
    let objects: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        objects.len(),
        table_lines - 1,
        "every record but the header: {jsonl}"
    );
    let mode = objects
        .iter()
        .find(|o| o["action"] == "set_mode")
        .expect("the mode change");
    assert_eq!(mode["account_id"], "ACC-2");
    assert_eq!(mode["detail"], "shadow");
    assert_eq!(mode["reason"], "trial");
    assert!(mode["id"].as_u64().is_some_and(|id| id > 0), "{mode}");
    let future = stdout(&run(
        &[
            "audit",
            "--format",
            "jsonl",
            "--since",
            "2999-01-01T00:00:00Z",
        ],
        &addr,
    ));
    assert_eq!(future, "", "nothing recorded after 2999");
    let json = stdout(&run(&["audit", "--json", "--limit", "0"], &addr));
    assert_eq!(json, jsonl, "--json is --format jsonl");
    // Breakers for scripts: one object per line, all of them, or one.
    let all = stdout(&run(&["status", "--json"], &addr));
    let breakers: Vec<serde_json::Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(!breakers.is_empty(), "{all}");
    let acc2 = breakers
        .iter()
        .find(|b| b["account_id"] == "ACC-2")
        .expect("ACC-2 listed");
    assert_eq!(acc2["mode"], "shadow");
    assert_eq!(acc2["mode_set_by_operator"], true);
    let one = stdout(&run(&["status", "ACC-2", "--json"], &addr));
    let one: serde_json::Value = serde_json::from_str(one.trim()).expect("one JSON object");
    assert_eq!(&one, acc2);
    // A reader that went away (`| head -1`, `| true`) ends each command quietly.
    for command in [&["status"][..], &["config"], &["audit"]] {
        let mut child = riskgate()
            .args(command)
            .args(["--addr", &addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run riskgate");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("riskgate ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && !stderr.contains("panicked"),
            "{command:?} into a closed pipe: {:?}, {stderr}",
            output.status
        );
    }
    let config = stdout(&run(&["config"], &addr));
    assert!(
        config.starts_with("# riskgate configuration in force, version ")
            && config.contains("[groups.venue-x]")
            && !config.contains("NOTE"),
        "{config}"
    );
    // The file changed in a way that needs a restart, then in a way that does not validate:
    // `riskgate config` says so each time, over what is still in force.
    std::fs::write(
        &file,
        "[groups.venue-x]\naccounts = [\"desk-a:*\"]\n[events]\nretained = 77\n",
    )
    .expect("config");
    wait_for(&logs, "take effect only after a restart");
    let config = stdout(&run(&["config"], &addr));
    assert!(
        config.contains("# NOTE: the configuration file changes sections that take effect only after a restart: events")
            && config.contains("retained = 10000"),
        "{config}"
    );
    std::fs::write(&file, "[breaker]\nfailure_threshold = 0\n").expect("config");
    wait_for(&logs, "configuration reload refused");
    let config = stdout(&run(&["config"], &addr));
    assert!(
        config.contains("# NOTE: the configuration file differs: its last reload was refused (")
            && config.contains("breaker.failure_threshold")
            && config.contains("[groups.venue-x]"),
        "{config}"
    );
    signal(&server, "TERM");
    assert!(server.wait().expect("server exit").success());
}

/// `riskgate serve` pinned to one CPU, on the durable store.
fn serve_on_one_core(listen: &str, data: &std::path::Path) -> Running {
    let child = std::process::Command::new("taskset")
        .args(["-c", "0", env!("CARGO_BIN_EXE_riskgate"), "serve"])
        .env("RISKGATE__SERVER__LISTEN", listen)
        .env("RISKGATE__STORE__PATH", data)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start riskgate serve under taskset");
    Running(child)
}

#[test]
fn on_one_core_the_server_runs_one_thread_and_keeps_what_it_acknowledged() {
    let listen = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{listen}");
    let data = tempfile::tempdir().expect("data directory");
    let mut server = serve_on_one_core(&listen, data.path());
    let logs = lines(server.stderr.take().expect("stderr"));
    let started = wait_for(&logs, "riskgate serving");
    assert!(
        started
            .iter()
            .any(|l| l.contains("runtime=\"current-thread\" runtime_threads=1")),
        "{started:?}"
    );
    // Each change is answered by the store's writer thread, from outside the runtime.
    for account in ["ONE-1", "ONE-2", "ONE-3"] {
        let tripped = stdout(&run(
            &["trip", account, "--new", "--reason", "one core"],
            &addr,
        ));
        assert!(tripped.contains("now OPEN"), "{tripped}");
    }
    let reset = stdout(&run(&["reset", "ONE-2", "--reason", "one core"], &addr));
    assert!(reset.contains("now CLOSED"), "{reset}");
    signal(&server, "TERM");
    assert!(server.wait().expect("server exit").success());
    wait_for(&logs, "riskgate stopped");

    let mut restarted = serve_on_one_core(&listen, data.path());
    let restarted_logs = lines(restarted.stderr.take().expect("stderr"));
    wait_for(&restarted_logs, "riskgate serving");
    let status = stdout(&run(&["status"], &addr));
    for (account, state) in [("ONE-1", "OPEN"), ("ONE-2", "CLOSED"), ("ONE-3", "OPEN")] {
        assert!(
            status
                .lines()
                .any(|l| l.contains(account) && l.contains(state)),
            "{account} {state}: {status}"
        );
    }
    signal(&restarted, "TERM");
    assert!(restarted.wait().expect("server exit").success());
}

/// A server that accepts connections but never answers is named, with the cause, within the
/// command's --timeout.
#[test]
fn a_server_that_never_answers_is_named_with_the_cause() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4) {
            held.push(stream);
        }
        std::thread::sleep(std::time::Duration::from_secs(30));
    });
    let output = riskgate()
        .args(["status", "--addr", &addr, "--timeout", "0.5"])
        .output()
        .expect("run riskgate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        stderr.contains(&addr) && stderr.contains("no answer within 500ms"),
        "{stderr}"
    );
}

/// With $USER unset and no --operator, an operator action is refused before it is sent, rather
/// than recorded under a made-up name.
#[test]
fn an_operator_action_without_an_operator_is_refused() {
    let output = riskgate()
        .args([
            "trip",
            "ACC-1",
            "--reason",
            "r",
            "--addr",
            "http://127.0.0.1:9",
        ])
        .env_remove("USER")
        .env_remove("RISKGATE_TOKEN")
        .output()
        .expect("run riskgate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert!(
        stderr.contains("who acts? pass --operator NAME"),
        "{stderr}"
    );
}

/// `riskgate settings` changes one account's settings over the file's, `riskgate config
/// ACCOUNT` shows each value's source, and both a reload and a restart keep them; a halt of a
/// group the file no longer defines is shown as such.
#[test]
fn account_settings_from_the_command_line_outlive_a_reload_and_a_restart() {
    let listen = format!("127.0.0.1:{}", free_port());
    let addr = format!("http://{listen}");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("riskgate.toml");
    let accounts = "[accounts.\"desk-a:momo\"]\nfailure_threshold = 3\n";
    std::fs::write(
        &file,
        format!("{accounts}[groups.venue-x]\naccounts = [\"desk-a:*\"]\n"),
    )
    .expect("config");
    let start = || {
        let mut server = Running(
            riskgate()
                .arg("serve")
                .arg("--config")
                .arg(&file)
                .env("RISKGATE__SERVER__LISTEN", &listen)
                .env("RISKGATE__STORE__PATH", dir.path().join("data"))
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("start riskgate serve"),
        );
        let logs = lines(server.stderr.take().expect("stderr"));
        wait_for(&logs, "riskgate serving");
        (server, logs)
    };
    let (server, logs) = start();
    let act = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--reason", "venue flaky"]);
        run(&all, &addr)
    };
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_default()
            .to_owned()
    };

    // Never seen: refused as a likely typo unless --new.
    let typo = act(&["settings", "desk-a:momo", "failure_threshold=1"]);
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("pass --new"));
    let set = stdout(&act(&[
        "settings",
        "desk-a:momo",
        "failure_threshold=1",
        "failure_kinds.timeout=ignore",
        "--new",
    ]));
    assert!(
        line(&set, "failure_threshold").ends_with("# operator"),
        "{set}"
    );
    assert!(
        line(&set, "failure_kinds.timeout").contains("\"ignore\""),
        "{set}"
    );
    // Invalid values are refused with the key and the rule, changing nothing.
    for (bad, says) in [
        ("failure_threshold=0", "failure_threshold must be >= 1"),
        (
            "open_timeout_secs=-5",
            "open_timeout_secs must be a number of seconds > 0",
        ),
        (
            "failure_treshold=2",
            "failure_treshold is not a breaker setting",
        ),
    ] {
        let refused = act(&["settings", "desk-a:momo", bad]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains(says),
            "{bad}: {stderr}"
        );
    }
    let shown = stdout(&run(&["config", "desk-a:momo"], &addr));
    assert!(
        line(&shown, "failure_threshold").contains("= 1 "),
        "{shown}"
    );
    assert!(
        line(&shown, "failure_threshold").ends_with("# operator"),
        "{shown}"
    );
    assert!(
        line(&shown, "open_timeout_secs").ends_with("# default"),
        "{shown}"
    );
    let status = stdout(&run(&["status", "desk-a:momo"], &addr));
    assert!(
        status.contains("operator set failure_kinds.timeout, failure_threshold"),
        "{status}"
    );
    let audit = stdout(&run(&["audit", "desk-a:momo"], &addr));
    assert!(
        audit.contains("settings") && audit.contains("failure_threshold=1"),
        "{audit}"
    );

    // A group halted, then dropped from the file: the halt is kept and shown as holding nothing;
    // the reload keeps the operator's settings.
    stdout(&run(
        &["halt", "--group", "venue-x", "--reason", "venue down"],
        &addr,
    ));
    std::fs::write(&file, accounts).expect("config");
    wait_for(&logs, "configuration reloaded");
    let halts = stdout(&run(&["halts"], &addr));
    assert!(
        halts.contains("HALTED group venue-x") && halts.contains("no longer in the configuration"),
        "{halts}"
    );
    let json = stdout(&run(&["halts", "--json"], &addr));
    assert!(json.contains("\"group_undefined\":true"), "{json}");
    let shown = stdout(&run(&["config", "desk-a:momo"], &addr));
    assert!(
        line(&shown, "failure_threshold").ends_with("# operator"),
        "{shown}"
    );

    // Restarted on the same store: still in force.
    let mut server = server;
    signal(&server, "TERM");
    assert!(server.wait().expect("server exit").success());
    let (server, _logs) = start();
    let shown = stdout(&run(&["config", "desk-a:momo"], &addr));
    assert!(
        line(&shown, "failure_threshold").contains("= 1 "),
        "{shown}"
    );
    assert!(
        line(&shown, "failure_threshold").ends_with("# operator"),
        "{shown}"
    );

    // Cleared: the file's value again.
    let cleared = stdout(&act(&["settings", "desk-a:momo", "--clear", "all"]));
    assert!(
        line(&cleared, "failure_threshold").contains("= 3 "),
        "{cleared}"
    );
    assert!(
        line(&cleared, "failure_threshold").ends_with("# file"),
        "{cleared}"
    );
    assert!(
        line(&cleared, "failure_kinds.timeout").ends_with("# default"),
        "{cleared}"
    );
    signal(&server, "TERM");
}

/// `riskgate --help` lists the commands in the order an operator reaches for them: run it,
/// look, act on an account, act on many, tools.
#[test]
fn help_lists_commands_in_an_operators_order() {
    let help = riskgate().arg("--help").output().expect("run riskgate");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let order = [
        "serve",
        "status",
        "halts",
        "watch",
        "audit",
        "config",
        "cluster",
        "health",
        "trip",
        "reset",
        "mode",
        "settings",
        "halt ",
        "resume",
        "hash-token",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|command| {
            help.find(&format!("\n  {command}"))
                .unwrap_or_else(|| panic!("{command} missing from the help: {help}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "commands out of order: {help}"
    );
}

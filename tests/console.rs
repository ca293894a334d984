//! The web console in a real browser: headless Chromium from Debian's packages, driven over
//! WebDriver (chromedriver) by fantoccini, against the built `riskgate serve` with token
//! authentication. Bots report through gRPC, operators act through the CLI and the page.
//!
//! Without `chromium` and `chromedriver` the test says so and passes; with
//! `RISKGATE_REQUIRE_BROWSER=1` (CI) it fails instead. With `RISKGATE_CONSOLE_SCREENSHOTS=DIR`
//! it saves the overview and an account page there (docs/ holds the ones the README shows).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::http::{body_text, http, read_stream_until, request};
use common::process::{free_port, lines, riskgate, wait_for, Running};
use common::{sha256_hex, PATIENCE};
use fantoccini::{Client, ClientBuilder, Locator};
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::{CheckTradeRequest, FailureKind, Outcome, ReportOutcomeRequest};
use serde_json::{json, Value};

const OPS_TOKEN: &str = "ops-console-token";
const WATCHER_TOKEN: &str = "watcher-console-token";
const BOT_TOKEN: &str = "bot-console-token";

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|path| path.is_file())
}

/// Chromium and chromedriver, or `None` (with a loud note) when this machine has neither and
/// the browser is not required.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_program("chromium").or_else(|| find_program("chromium-browser"));
    let driver = find_program("chromedriver");
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Some((chromium, driver)),
        _ => {
            let why = "chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)";
            if std::env::var("RISKGATE_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("RISKGATE_REQUIRE_BROWSER=1 but {why}");
            }
            eprintln!("SKIPPED: the web console browser test: {why}");
            None
        }
    }
}

struct Server {
    process: Running,
    grpc: String,
    console: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_server() -> Server {
    let grpc = format!("127.0.0.1:{}", free_port());
    let console = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("riskgate.toml");
    std::fs::write(&config, config_text(&grpc, &console, true)).expect("write config");
    let mut process = Running(
        riskgate()
            .args(["serve", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(process.stderr.take().expect("stderr"));
    let started = wait_for(&logs, "riskgate serving");
    assert!(
        started
            .iter()
            .any(|l| l.contains("web console") && l.contains(&console)),
        "the start-up log names the console's address: {started:#?}"
    );
    // Keep reading the log so the server never blocks on a full pipe.
    std::thread::spawn(move || while logs.recv().is_ok() {});
    Server {
        process,
        grpc: format!("http://{grpc}"),
        console: format!("http://{console}"),
        config,
        _dir: dir,
    }
}

/// The server's configuration; without `ops`, the operator's principal is gone.
fn config_text(grpc: &str, console: &str, ops: bool) -> String {
    let ops = if ops {
        format!(
            "[[auth.principals]]\nname = \"ops\"\nroles = [\"operator\"]\ntoken_sha256 = \"{}\"\n",
            sha256_hex(OPS_TOKEN)
        )
    } else {
        String::new()
    };
    format!(
        r#"
[server]
listen = "{grpc}"
[store]
kind = "memory"
[breaker]
failure_threshold = 3
failure_window_secs = 600
open_timeout_secs = 900
[console]
listen = "{console}"
[auth]
mode = "token"
{ops}
[[auth.principals]]
name = "watcher"
roles = ["monitor"]
token_sha256 = "{watcher}"
[[auth.principals]]
name = "bot-1"
roles = ["bot"]
token_sha256 = "{bot}"
[groups.venue-x]
accounts = ["desk-b:*"]
"#,
        watcher = sha256_hex(WATCHER_TOKEN),
        bot = sha256_hex(BOT_TOKEN),
    )
}

/// The CLI as an operator with a token.
fn cli(server: &Server, token: &str, args: &[&str]) -> Output {
    let output = riskgate()
        .args(args)
        .env("RISKGATE_ADDR", &server.grpc)
        .env("RISKGATE_TOKEN", token)
        .output()
        .expect("run riskgate");
    assert!(
        output.status.success(),
        "riskgate {args:?} failed: {output:?}"
    );
    output
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A bot's gRPC calls: a check, then `failures` failed orders reported.
async fn bot_fails(server: &Server, account: &str, failures: usize) {
    let channel = tonic::transport::Channel::from_shared(server.grpc.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut gate =
        GateServiceClient::with_interceptor(channel, |mut request: tonic::Request<()>| {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {BOT_TOKEN}").parse().expect("header"),
            );
            Ok(request)
        });
    for n in 0..failures.max(1) {
        let check = gate
            .check_trade(CheckTradeRequest {
                account_id: account.to_owned(),
                ..Default::default()
            })
            .await
            .expect("check")
            .into_inner();
        if n >= failures {
            break;
        }
        gate.report_outcome(ReportOutcomeRequest {
            account_id: account.to_owned(),
            permit_id: check.permit_id,
            outcome: Outcome::Failure.into(),
            failure_kind: FailureKind::OrderRejected.into(),
            order_id: format!("ORD-{}", 4100 + n),
            detail: format!("venue rejected: price band exceeded ({})", n + 1),
            ..Default::default()
        })
        .await
        .expect("report");
    }
}

/// chromedriver in a process group of its own, with the browsers it starts: all killed when
/// dropped, so a failing test leaves no browser behind.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0.id()) {
            // SAFETY: sends a signal to the process group this test created; no memory is shared.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

async fn start_browser(chromium: &PathBuf, driver: &PathBuf) -> (Driver, Client) {
    use std::os::unix::process::CommandExt as _;
    let port = free_port();
    let driver = Driver(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--lang=en-GB"],
        }),
    );
    let deadline = Instant::now() + PATIENCE;
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a browser session through chromedriver: {e}"),
        }
    };
    (driver, client)
}

async fn wait_for_css(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css:?} on the page: {e}"))
}

async fn wait_until_gone(client: &Client, css: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = client
            .find_all(Locator::Css(css))
            .await
            .expect("find elements");
        if found.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{css:?} is still on the page");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the element `css` finds, finding it again if the page redrew it in between.
async fn text_of(client: &Client, css: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match wait_for_css(client, css).await.text().await {
            Ok(text) => return text,
            Err(e) if Instant::now() < deadline && e.to_string().contains("stale element") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot read {css:?}: {e}"),
        }
    }
}

/// Clicks the element `css` finds, finding it again if the page redrew it in between.
async fn click(client: &Client, css: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match wait_for_css(client, css).await.click().await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline && e.to_string().contains("stale element") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot click {css:?}: {e}"),
        }
    }
}

/// Fills the confirmation dialog's reason and confirms; returns what the dialog said would
/// happen.
async fn confirm(client: &Client, reason: &str) -> String {
    wait_for_css(client, "dialog#confirm[open]").await;
    let what = client
        .find(Locator::Css("#confirm-what"))
        .await
        .expect("what will happen")
        .text()
        .await
        .expect("text");
    wait_for_css(client, "#confirm-reason")
        .await
        .send_keys(reason)
        .await
        .expect("type the reason");
    click(client, "#confirm-go").await;
    wait_until_gone(client, "dialog#confirm[open]").await;
    what
}

async fn sign_in(client: &Client, token: &str) {
    wait_for_css(client, "#sign-in-token")
        .await
        .send_keys(token)
        .await
        .expect("type the token");
    click(client, "#sign-in-go").await;
    wait_for_css(client, "#accounts").await;
}

/// Runs `fetch` in the page and answers `[status, body]`.
async fn page_fetch(client: &Client, method: &str, path: &str, body: Value, csrf: bool) -> Value {
    let script = r#"
        const [method, path, body, csrf, done] = arguments;
        (async () => {
          const headers = { "Content-Type": "application/json" };
          if (csrf) {
            const session = await (await fetch("/api/session")).json();
            headers["X-CSRF-Token"] = session.csrf;
          }
          const r = await fetch(path, { method, headers, body: JSON.stringify(body) });
          done([r.status, await r.json()]);
        })();
    "#;
    client
        .execute_async(script, vec![json!(method), json!(path), body, json!(csrf)])
        .await
        .expect("fetch in the page")
}

async fn screenshot(client: &Client, name: &str) {
    let Ok(dir) = std::env::var("RISKGATE_CONSOLE_SCREENSHOTS") else {
        return;
    };
    let png = client.screenshot().await.expect("screenshot");
    std::fs::write(PathBuf::from(dir).join(name), png).expect("save the screenshot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser_shows_live_state_and_acts_as_the_operator() {
    let Some((chromium, driver)) = browser_programs() else {
        return;
    };
    let server = start_server();
    // Accounts in the states a desk sees during an incident.
    bot_fails(&server, "desk-a:momo", 3).await;
    bot_fails(&server, "desk-a:arb", 1).await;
    bot_fails(&server, "desk-b:mm-1", 0).await;
    bot_fails(&server, "desk-b:mm-2", 0).await;
    bot_fails(&server, "desk-c:basis", 0).await;
    cli(
        &server,
        OPS_TOKEN,
        &[
            "mode",
            "desk-c:basis",
            "shadow",
            "--reason",
            "new model on trial",
        ],
    );

    let (_driver, client) = start_browser(&chromium, &driver).await;
    client
        .goto(&server.console)
        .await
        .expect("open the console");
    sign_in(&client, OPS_TOKEN).await;
    wait_for_css(
        &client,
        r#"#accounts tr[data-account="desk-a:momo"][data-state="OPEN"]"#,
    )
    .await;
    let shadow = text_of(
        &client,
        r#"#accounts tr[data-account="desk-c:basis"] .badge.mode-shadow"#,
    )
    .await;
    assert_eq!(shadow, "shadow");

    // The filter narrows the accounts shown.
    wait_for_css(&client, "#filter")
        .await
        .send_keys("basis")
        .await
        .expect("type a filter");
    wait_until_gone(&client, r#"#accounts tr[data-account="desk-a:momo"]"#).await;
    wait_for_css(&client, r#"#accounts tr[data-account="desk-c:basis"]"#).await;
    wait_for_css(&client, "#filter")
        .await
        .clear()
        .await
        .expect("clear the filter");
    wait_for_css(&client, r#"#accounts tr[data-account="desk-a:momo"]"#).await;

    // A trip made through gRPC appears on the open page, pushed by the event feed.
    cli(
        &server,
        OPS_TOKEN,
        &["trip", "desk-b:mm-1", "--reason", "runaway quoting"],
    );
    wait_for_css(
        &client,
        r#"#accounts tr[data-account="desk-b:mm-1"][data-state="OPEN"]"#,
    )
    .await;
    wait_for_css(&client, r#"#events li[data-account="desk-b:mm-1"]"#).await;

    // A halt banner appears, says who and why, and clears when resumed from the page.
    cli(
        &server,
        OPS_TOKEN,
        &[
            "halt",
            "--group",
            "venue-x",
            "--reason",
            "venue X rejecting everything",
        ],
    );
    let text = text_of(
        &client,
        r#".banner.halt[data-scope="group"][data-group="venue-x"]"#,
    )
    .await;
    assert!(
        text.contains("GROUP venue-x HALTED")
            && text.contains("ops")
            && text.contains("venue X rejecting everything"),
        "{text}"
    );
    screenshot(&client, "console-overview.png").await;
    click(
        &client,
        r#".banner.halt[data-group="venue-x"] button.resume"#,
    )
    .await;
    let what = confirm(&client, "venue X fixed its gateway").await;
    assert!(
        what.contains("Ends the halt of group venue-x by ops"),
        "{what}"
    );
    wait_until_gone(&client, ".banner.halt").await;
    let halts = cli(&server, OPS_TOKEN, &["halts", "--json"]);
    assert!(json_lines(&halts).is_empty(), "{halts:?}");

    // The firm-wide kill switch from the page.
    click(&client, "#halt-all").await;
    let what = confirm(&client, "drill: firm-wide halt").await;
    assert!(what.contains("Every order of every account"), "{what}");
    wait_for_css(&client, r#".banner.halt[data-scope="firm"]"#).await;
    let halts = json_lines(&cli(&server, OPS_TOKEN, &["halts", "--json"]));
    assert_eq!(halts.len(), 1);
    assert_eq!(halts[0]["scope"], "firm");
    assert_eq!(halts[0]["operator"], "ops");
    click(&client, r#".banner.halt[data-scope="firm"] button.resume"#).await;
    confirm(&client, "drill over").await;
    wait_until_gone(&client, ".banner.halt").await;

    // The account page: the failures that opened it, then a reset from the page, audited.
    click(&client, r#"#accounts tr[data-account="desk-a:momo"] a"#).await;
    wait_for_css(&client, "#account-title .badge.state-open").await;
    let failures = client
        .find_all(Locator::Css("#failures tbody tr"))
        .await
        .expect("failures");
    assert_eq!(failures.len(), 3, "the three failures that opened it");
    let first = text_of(&client, "#failures tbody tr").await;
    assert!(
        first.contains("order_rejected") && first.contains("ORD-41"),
        "{first}"
    );
    wait_for_css(&client, r#"#events li[data-account="desk-a:momo"]"#).await;
    screenshot(&client, "console-account.png").await;
    click(&client, "#reset").await;
    let what = confirm(&client, "venue price bands fixed").await;
    assert!(what.contains("from OPEN to CLOSED"), "{what}");
    wait_for_css(&client, "#account-title .badge.state-closed").await;
    wait_for_css(&client, r#"#audit tr[data-action="reset"]"#).await;
    let audit = json_lines(&cli(
        &server,
        OPS_TOKEN,
        &["audit", "desk-a:momo", "--json"],
    ));
    let reset = audit
        .iter()
        .find(|r| r["action"] == "reset")
        .expect("the reset is audited");
    assert_eq!(reset["operator"], "ops");
    assert_eq!(reset["reason"], "venue price bands fixed");
    assert!(
        reset["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("console ")),
        "{reset}"
    );

    // A trip from the page.
    click(&client, "#trip").await;
    let what = confirm(&client, "suspicious fills").await;
    assert!(
        what.contains("every order is refused until an operator resets it"),
        "{what}"
    );
    wait_for_css(&client, "#account-title .badge.state-open").await;
    let status = json_lines(&cli(
        &server,
        OPS_TOKEN,
        &["status", "desk-a:momo", "--json"],
    ));
    assert_eq!(status[0]["state"], "OPEN");
    assert_eq!(status[0]["tripped_by_operator"], true);

    // A typo is not acted on silently: the page says the account was never seen, and the
    // action is refused unless confirmed as a new account.
    client
        .goto(&format!("{}/account/desk-a:mmo", server.console))
        .await
        .expect("open a mistyped account");
    wait_for_css(&client, "#never-seen").await;
    let refused = page_fetch(
        &client,
        "POST",
        "/api/actions/trip",
        json!({ "account_id": "desk-a:mmo", "reason": "typo" }),
        true,
    )
    .await;
    assert_eq!(refused[0], 409, "{refused}");
    assert!(
        refused[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("never seen")),
        "{refused}"
    );
    let unseen = riskgate()
        .args(["status", "desk-a:mmo"])
        .env("RISKGATE_ADDR", &server.grpc)
        .env("RISKGATE_TOKEN", OPS_TOKEN)
        .output()
        .expect("status");
    assert!(
        !unseen.status.success(),
        "nothing was created for the typo: {unseen:?}"
    );

    // An action without the session's CSRF token is refused.
    let forged = page_fetch(
        &client,
        "POST",
        "/api/actions/halt",
        json!({ "reason": "forged" }),
        false,
    )
    .await;
    assert_eq!(forged[0], 403, "{forged}");
    assert!(
        forged[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("CSRF")),
        "{forged}"
    );

    // A monitor reads everything and may not act.
    client.goto(&server.console).await.expect("overview");
    click(&client, "#sign-out").await;
    sign_in(&client, WATCHER_TOKEN).await;
    wait_for_css(
        &client,
        r#"#accounts tr[data-account="desk-a:momo"][data-state="OPEN"]"#,
    )
    .await;
    assert!(
        client
            .find_all(Locator::Css("#halt-all"))
            .await
            .expect("find")
            .is_empty(),
        "no kill switch for a monitor"
    );
    let refused = page_fetch(
        &client,
        "POST",
        "/api/actions/halt",
        json!({ "reason": "not mine" }),
        true,
    )
    .await;
    assert_eq!(refused[0], 403, "{refused}");
    assert!(
        refused[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("may read but not act")),
        "{refused}"
    );
    assert!(json_lines(&cli(&server, OPS_TOKEN, &["halts", "--json"])).is_empty());
    // A wrong token is refused at sign-in.
    click(&client, "#sign-out").await;
    wait_for_css(&client, "#sign-in-token")
        .await
        .send_keys("not-a-token")
        .await
        .expect("type");
    click(&client, "#sign-in-go").await;
    let error = wait_for_css(&client, "#sign-in-error").await;
    let deadline = Instant::now() + PATIENCE;
    while error.text().await.expect("error text").is_empty() {
        assert!(Instant::now() < deadline, "no sign-in error shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(error.text().await.expect("text").contains("unknown token"));
    client.close().await.expect("close the browser");
}

#[tokio::test]
async fn the_console_over_http_resumes_events_by_id_and_rechecks_the_token_on_every_request() {
    let server = start_server();
    let client = http();
    let page = client
        .request(request("GET", &server.console, None, &[], None))
        .await
        .expect("the page");
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(
        page.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );

    // Nothing is readable before signing in, and a sign-in from another origin is refused.
    let anonymous = client
        .request(request(
            "GET",
            &format!("{}/api/overview", server.console),
            None,
            &[],
            None,
        ))
        .await
        .expect("overview");
    assert_eq!(anonymous.status(), 401);
    let session_url = format!("{}/api/session", server.console);
    let cross = client
        .request(request(
            "POST",
            &session_url,
            None,
            &[("origin", "http://evil.example")],
            Some(json!({ "token": OPS_TOKEN })),
        ))
        .await
        .expect("cross-origin sign-in");
    assert_eq!(cross.status(), 403);
    // Behind a proxy that rewrites Host, the browser's host arrives in X-Forwarded-Host.
    let proxied = |origin: &'static str| {
        request(
            "POST",
            &session_url,
            None,
            &[("origin", origin), ("x-forwarded-host", "console.example")],
            Some(json!({ "token": OPS_TOKEN })),
        )
    };
    let through_proxy = client
        .request(proxied("https://console.example"))
        .await
        .expect("sign-in through a proxy");
    assert_eq!(through_proxy.status(), 200);
    let forged = client
        .request(proxied("https://evil.example"))
        .await
        .expect("cross-origin sign-in through a proxy");
    assert_eq!(forged.status(), 403);
    let signed_in = client
        .request(request(
            "POST",
            &session_url,
            None,
            &[],
            Some(json!({ "token": OPS_TOKEN })),
        ))
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 200);
    let set_cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    let info: Value = serde_json::from_str(&body_text(signed_in).await).expect("JSON");
    assert_eq!(info["operator"], "ops");
    // Each request extends the session (its cookie comes back with a later expiry).
    let used = client
        .request(request("GET", &session_url, Some(&cookie), &[], None))
        .await
        .expect("session");
    assert!(
        used.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&cookie)),
        "{:?}",
        used.headers()
    );
    assert_eq!(info["may_act"], true);

    // Three events; a browser that reconnects after the first gets the second and third, once.
    for account in ["desk-z:1", "desk-z:2", "desk-z:3"] {
        cli(
            &server,
            OPS_TOKEN,
            &["trip", account, "--new", "--reason", "drill"],
        );
    }
    let events_url = format!("{}/api/events", server.console);
    let resumed = client
        .request(request(
            "GET",
            &events_url,
            Some(&cookie),
            &[("last-event-id", "1")],
            None,
        ))
        .await
        .expect("events");
    assert_eq!(resumed.status(), 200);
    let text = read_stream_until(resumed, "id: 3\n").await;
    assert!(
        text.contains("id: 2\n") && !text.contains("id: 1\n"),
        "{text}"
    );
    assert_eq!(text.matches("id: 2\n").count(), 1, "{text}");
    // A resume point the server's history does not hold says so: re-read, then follow.
    let ahead = client
        .request(request(
            "GET",
            &format!("{events_url}?after=999"),
            Some(&cookie),
            &[],
            None,
        ))
        .await
        .expect("events");
    let text = read_stream_until(ahead, "event: resync").await;
    assert!(text.contains("ahead of the latest sequence"), "{text}");

    // A timed trip through the console's API: held until the given time, then tested.
    let session: Value = serde_json::from_str(
        &body_text(
            client
                .request(request("GET", &session_url, Some(&cookie), &[], None))
                .await
                .expect("session"),
        )
        .await,
    )
    .expect("JSON");
    let csrf = session["csrf"].as_str().expect("a CSRF token").to_owned();
    let until =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(3600))
            .to_string();
    let tripped = client
        .request(request(
            "POST",
            &format!("{}/api/actions/trip", server.console),
            Some(&cookie),
            &[("x-csrf-token", &csrf)],
            Some(json!({ "account_id": "desk-z:1", "reason": "an hour off", "until": until })),
        ))
        .await
        .expect("trip");
    assert_eq!(tripped.status(), 200);
    let answer: Value = serde_json::from_str(&body_text(tripped).await).expect("JSON");
    assert_eq!(answer["breaker"]["tripped_by_operator"], true);
    let recovery = answer["breaker"]["recovery_at"]
        .as_str()
        .expect("a recovery time");
    assert_eq!(
        humantime::parse_rfc3339_weak(recovery).expect("time"),
        humantime::parse_rfc3339_weak(&until).expect("time"),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("until")),
        "{answer}"
    );
    let unknown_mode = client
        .request(request(
            "POST",
            &format!("{}/api/actions/mode", server.console),
            Some(&cookie),
            &[("x-csrf-token", &csrf)],
            Some(json!({ "account_id": "desk-z:1", "reason": "x", "mode": "off" })),
        ))
        .await
        .expect("mode");
    assert_eq!(unknown_mode.status(), 400);
    assert!(body_text(unknown_mode)
        .await
        .contains("enforce, shadow or disabled"));

    // A reload that removes the operator's principal signs the open session out.
    std::fs::write(
        &server.config,
        config_text(
            server.grpc.trim_start_matches("http://"),
            server.console.trim_start_matches("http://"),
            false,
        ),
    )
    .expect("rewrite config");
    common::process::signal(&server.process, "HUP");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = client
            .request(request("GET", &session_url, Some(&cookie), &[], None))
            .await
            .expect("session");
        if answer.status() == 401 {
            let text = body_text(answer).await;
            assert!(text.contains("signed out: unknown token"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed principal is still signed in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

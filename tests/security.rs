//! Who may do what, over real sockets: every role against every RPC with bearer tokens, a
//! bot held to its accounts, mutual TLS with generated certificates (unknown, expired and
//! foreign ones refused), TLS certificates re-read on SIGHUP, and hostile input.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::sha256_hex;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use riskgate::clock::SystemClock;
use riskgate::config::Config;
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::*;
use riskgate::server::{self, ServeError};
use riskgate::store::MemoryStore;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const PATIENCE: Duration = Duration::from_secs(20);

struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Served {
    async fn start(toml: &str, dir: &Path) -> Served {
        let file = dir.join("riskgate.toml");
        std::fs::write(&file, toml).expect("config");
        let config = Config::load_with_env(Some(&file), Some(HashMap::new())).expect("config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(
                listener,
                &config,
                Arc::new(MemoryStore::new(1000)),
                Arc::new(SystemClock::new()),
                async {
                    let _ = stopped.await;
                },
            )
            .await
        });
        Served {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Waits for SERVING through `channel` (health needs no credentials).
    async fn ready(&self, channel: Channel) {
        let mut health = HealthClient::new(channel);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await;
            if status.is_ok_and(|s| s.into_inner().status == 1) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not SERVING in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(PATIENCE, self.task).await;
    }
}

async fn plain(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).expect("header"),
        );
    }
    request
}

/// Every RPC, called as the holder of `token`; the status of each (OK as `Code::Ok`).
async fn call_everything(channel: Channel, token: Option<&str>) -> Vec<(&'static str, Code)> {
    let mut gate = GateServiceClient::new(channel.clone());
    let mut monitor = MonitorServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let code = |result: Result<(), Status>| result.err().map_or(Code::Ok, |s| s.code());
    let t = token;
    let mut results = Vec::new();
    results.push((
        "CheckTrade",
        code(
            gate.check_trade(with_token(
                CheckTradeRequest {
                    account_id: "desk-a:1".into(),
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(drop),
        ),
    ));
    results.push((
        "ReportOutcome",
        code(
            gate.report_outcome(with_token(
                ReportOutcomeRequest {
                    account_id: "desk-a:1".into(),
                    outcome: Outcome::Success as i32,
                    ..Default::default()
                },
                t,
            ))
            .await
            .map(drop),
        ),
    ));
    results.push((
        "GetBreaker",
        code(
            monitor
                .get_breaker(with_token(
                    GetBreakerRequest {
                        account_id: "desk-a:1".into(),
                    },
                    t,
                ))
                .await
                .map(drop)
                .or_else(|s| {
                    if s.code() == Code::NotFound {
                        Ok(())
                    } else {
                        Err(s)
                    }
                }),
        ),
    ));
    results.push((
        "ListBreakers",
        code(
            monitor
                .list_breakers(with_token(ListBreakersRequest::default(), t))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "WatchEvents",
        code(
            monitor
                .watch_events(with_token(WatchEventsRequest::default(), t))
                .await
                .map(drop),
        ),
    ));
    let action = |reason: &str| (reason.to_owned(), "from-request".to_owned());
    let (reason, operator) = action("matrix");
    results.push((
        "TripBreaker",
        code(
            admin
                .trip_breaker(with_token(
                    TripBreakerRequest {
                        account_id: "desk-a:2".into(),
                        reason: reason.clone(),
                        operator: operator.clone(),
                        until: None,
                    },
                    t,
                ))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "ResetBreaker",
        code(
            admin
                .reset_breaker(with_token(
                    ResetBreakerRequest {
                        account_id: "desk-a:2".into(),
                        reason: reason.clone(),
                        operator: operator.clone(),
                    },
                    t,
                ))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "SetMode",
        code(
            admin
                .set_mode(with_token(
                    SetModeRequest {
                        account_id: "desk-a:2".into(),
                        mode: Mode::Enforce as i32,
                        reason: reason.clone(),
                        operator: operator.clone(),
                    },
                    t,
                ))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "HaltAll",
        code(
            admin
                .halt_all(with_token(
                    HaltAllRequest {
                        reason: reason.clone(),
                        operator: operator.clone(),
                    },
                    t,
                ))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "ResumeAll",
        code(
            admin
                .resume_all(with_token(
                    ResumeAllRequest {
                        reason: reason.clone(),
                        operator: operator.clone(),
                    },
                    t,
                ))
                .await
                .map(drop)
                .or_else(|s| {
                    if s.code() == Code::FailedPrecondition {
                        Ok(())
                    } else {
                        Err(s)
                    }
                }),
        ),
    ));
    results.push((
        "HaltGroup",
        code(
            admin
                .halt_group(with_token(
                    HaltGroupRequest {
                        group: "desk-a".into(),
                        reason: reason.clone(),
                        operator: operator.clone(),
                    },
                    t,
                ))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "ResumeGroup",
        code(
            admin
                .resume_group(with_token(
                    ResumeGroupRequest {
                        group: "desk-a".into(),
                        reason: reason.clone(),
                        operator: operator.clone(),
                    },
                    t,
                ))
                .await
                .map(drop)
                .or_else(|s| {
                    if s.code() == Code::FailedPrecondition {
                        Ok(())
                    } else {
                        Err(s)
                    }
                }),
        ),
    ));
    results.push((
        "ListHalts",
        code(
            admin
                .list_halts(with_token(ListHaltsRequest {}, t))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "GetConfig",
        code(
            admin
                .get_config(with_token(GetConfigRequest {}, t))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "ListAuditRecords",
        code(
            admin
                .list_audit_records(with_token(ListAuditRecordsRequest::default(), t))
                .await
                .map(drop),
        ),
    ));
    results.push((
        "Health",
        code(
            health
                .check(with_token(
                    HealthCheckRequest {
                        service: String::new(),
                    },
                    t,
                ))
                .await
                .map(drop),
        ),
    ));
    results
}

const GATE: &[&str] = &["CheckTrade", "ReportOutcome"];
const MONITOR: &[&str] = &[
    "GetBreaker",
    "ListBreakers",
    "WatchEvents",
    "ListHalts",
    "GetConfig",
    "ListAuditRecords",
];
const ADMIN: &[&str] = &[
    "TripBreaker",
    "ResetBreaker",
    "SetMode",
    "HaltAll",
    "ResumeAll",
    "HaltGroup",
    "ResumeGroup",
];

fn token_config() -> String {
    format!(
        r#"
[store]
kind = "memory"
[groups.desk-a]
accounts = ["desk-a:*"]
[auth]
mode = "token"
[[auth.principals]]
name = "desk-a-bot"
roles = ["bot"]
accounts = ["desk-a:*"]
token_sha256 = "{bot}"
[[auth.principals]]
name = "grafana"
roles = ["monitor"]
token_sha256 = "{monitor}"
[[auth.principals]]
name = "alice"
roles = ["operator"]
token_sha256 = "{operator}"
[[auth.principals]]
name = "slow-bot"
roles = ["bot"]
token_sha256 = "{slow}"
gate_calls_per_sec = 1
"#,
        bot = sha256_hex("bot-secret"),
        monitor = sha256_hex("monitor-secret"),
        operator = sha256_hex("operator-secret"),
        slow = sha256_hex("slow-secret"),
    )
}

#[tokio::test]
async fn every_role_against_every_rpc() {
    let dir = tempfile::tempdir().expect("dir");
    let served = Served::start(&token_config(), dir.path()).await;
    let channel = plain(served.addr).await;
    served.ready(channel.clone()).await;
    let cases: [(Option<&str>, &[&str]); 5] = [
        (Some("bot-secret"), GATE),
        (Some("monitor-secret"), MONITOR),
        (Some("operator-secret"), &[MONITOR, ADMIN].concat()),
        (None, &[]),
        (Some("not-a-token"), &[]),
    ];
    for (token, allowed) in cases {
        for (rpc, code) in call_everything(channel.clone(), token).await {
            let expected = if rpc == "Health" || allowed.contains(&rpc) {
                Code::Ok
            } else if token.is_none() || token == Some("not-a-token") {
                Code::Unauthenticated
            } else {
                Code::PermissionDenied
            };
            assert_eq!(code, expected, "{rpc} with {token:?}");
        }
    }
    served.stop().await;
}

#[tokio::test]
async fn a_bot_is_held_to_its_accounts_and_actions_record_the_principal() {
    let dir = tempfile::tempdir().expect("dir");
    let served = Served::start(&token_config(), dir.path()).await;
    let channel = plain(served.addr).await;
    served.ready(channel.clone()).await;
    let mut gate = GateServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel.clone());
    // An existing account of another desk and one that does not exist are refused alike.
    admin
        .trip_breaker(with_token(
            TripBreakerRequest {
                account_id: "desk-b:1".into(),
                reason: "exists now".into(),
                operator: "mallory".into(),
                until: None,
            },
            Some("operator-secret"),
        ))
        .await
        .expect("trip");
    let mut messages = Vec::new();
    for account in ["desk-b:1", "desk-b:404"] {
        let err = gate
            .check_trade(with_token(
                CheckTradeRequest {
                    account_id: account.into(),
                    ..Default::default()
                },
                Some("bot-secret"),
            ))
            .await
            .expect_err("not this bot's account");
        assert_eq!(err.code(), Code::PermissionDenied);
        messages.push(err.message().replace(account, "ACCOUNT"));
    }
    assert_eq!(
        messages[0], messages[1],
        "the refusal does not reveal existence"
    );
    // The audit trail names the authenticated principal, not the name in the request.
    let records = admin
        .list_audit_records(with_token(
            ListAuditRecordsRequest::default(),
            Some("operator-secret"),
        ))
        .await
        .expect("audit")
        .into_inner()
        .records;
    assert_eq!(records[0].operator, "alice");
    // Over its rate, a principal is told its limit.
    let mut limited = None;
    for _ in 0..10 {
        if let Err(status) = gate
            .check_trade(with_token(
                CheckTradeRequest {
                    account_id: "ANY".into(),
                    ..Default::default()
                },
                Some("slow-secret"),
            ))
            .await
        {
            limited = Some(status);
            break;
        }
    }
    let limited = limited.expect("a burst past 1 call/s is limited");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited.message().contains("1 GateService calls per second"),
        "{limited:?}"
    );
    served.stop().await;
}

#[tokio::test]
async fn hostile_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let served = Served::start(
        "[store]\nkind = \"memory\"\n[server]\nmax_accounts = 20\n[limits]\nmax_message_bytes = 1024\nmax_watchers = 1\n",
        dir.path(),
    )
    .await;
    let channel = plain(served.addr).await;
    served.ready(channel.clone()).await;
    let mut gate = GateServiceClient::new(channel.clone());
    // Oversized.
    let err = gate
        .check_trade(CheckTradeRequest {
            account_id: "x".repeat(4096),
            ..Default::default()
        })
        .await
        .expect_err("oversized");
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("too large"), "{err:?}");
    // Invalid UTF-8 where the proto says string: field 1, two bytes that are not UTF-8.
    let mut raw = tonic::client::Grpc::new(channel.clone());
    raw.ready().await.expect("ready");
    let err = raw
        .unary::<Vec<u8>, CheckTradeResponse, RawCodec>(
            Request::new(vec![0x0a, 0x02, 0xff, 0xfe]),
            "/riskgate.v1.GateService/CheckTrade".parse().expect("path"),
            RawCodec,
        )
        .await
        .expect_err("invalid UTF-8");
    // Per the gRPC status code guide, a request that does not parse is INTERNAL.
    assert_eq!(err.code(), Code::Internal);
    assert!(err.message().contains("UTF-8"), "{err:?}");
    // A flood of new account ids keeps the registry at max_accounts: idle breakers make room
    // for them (none is refused), and memory stays flat.
    for i in 0..50 {
        gate.check_trade(CheckTradeRequest {
            account_id: format!("flood-{i}"),
            ..Default::default()
        })
        .await
        .expect("idle breakers make room");
    }
    let total = MonitorServiceClient::new(channel.clone())
        .list_breakers(ListBreakersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .total_breakers;
    assert!(total <= 20, "{total} breakers for max_accounts = 20");
    assert!(gate
        .check_trade(CheckTradeRequest {
            account_id: "flood-0".into(),
            ..Default::default()
        })
        .await
        .is_ok());
    // One watcher at most.
    let mut monitor = MonitorServiceClient::new(channel.clone());
    let _first = monitor
        .watch_events(WatchEventsRequest::default())
        .await
        .expect("first watcher");
    let err = monitor
        .watch_events(WatchEventsRequest::default())
        .await
        .expect_err("second watcher");
    assert_eq!(err.code(), Code::ResourceExhausted);
    served.stop().await;
}

/// Sends raw bytes as the request message; decodes the answer as protobuf.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct ProstDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = CheckTradeResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder;
    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ProstDecoder {
    type Item = CheckTradeResponse;
    type Error = Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<CheckTradeResponse>, Status> {
        use prost::Message;
        CheckTradeResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A CA, a server certificate for 127.0.0.1 and client certificates, written as PEM files.
struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Pki {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
                .expect("CA"),
        }
    }

    fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM).
    fn issue(&self, cn: &str, sans: &[&str], client: bool, expired: bool) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if !client {
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        }
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let issuer: &Issuer<'_, KeyPair> = &self.issuer;
        let cert = params.signed_by(&key, issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn mutual_tls_identifies_principals_by_certificate_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new("riskgate test CA");
    let foreign = Pki::new("someone else's CA");
    let (server_cert, server_key) = pki.issue("riskgate", &["localhost"], false, false);
    let toml = format!(
        r#"
[store]
kind = "memory"
[tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
[auth]
mode = "mtls"
[[auth.principals]]
name = "desk-a-bot"
roles = ["bot"]
cert_name = "bot-a"
[[auth.principals]]
name = "ops"
roles = ["operator"]
cert_name = "ops.example.com"
"#,
        cert = write(dir.path(), "server.pem", &server_cert),
        key = write(dir.path(), "server.key", &server_key),
        ca = write(dir.path(), "ca.pem", &pki.ca_pem()),
    );
    let served = Served::start(&toml, dir.path()).await;
    let bot = pki.issue("bot-a", &[], true, false);
    let ops = pki.issue("someone", &["ops.example.com"], true, false);
    let nobody = pki.issue("nobody", &[], true, false);
    let expired = pki.issue("bot-a", &[], true, true);
    let forged = foreign.issue("bot-a", &[], true, false);

    let bot_channel = tls_channel(served.addr, &pki.ca_pem(), Some(&bot))
        .await
        .expect("connect");
    served.ready(bot_channel.clone()).await;
    // By subject CN: the bot trades and may not operate.
    for (rpc, code) in call_everything(bot_channel, None).await {
        let expected = if GATE.contains(&rpc) || rpc == "Health" {
            Code::Ok
        } else {
            Code::PermissionDenied
        };
        assert_eq!(code, expected, "bot: {rpc}");
    }
    // By SAN DNS name: the operator operates; its actions carry its principal.
    let ops_channel = tls_channel(served.addr, &pki.ca_pem(), Some(&ops))
        .await
        .expect("connect");
    let view = AdminServiceClient::new(ops_channel.clone())
        .trip_breaker(TripBreakerRequest {
            account_id: "X".into(),
            reason: "drill".into(),
            operator: String::new(),
            until: None,
        })
        .await
        .expect("operator may trip")
        .into_inner();
    assert!(view.breaker.is_some());
    let records = AdminServiceClient::new(ops_channel)
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records;
    assert_eq!(records[0].operator, "ops");
    // A valid certificate that names no principal: UNAUTHENTICATED.
    let nobody_channel = tls_channel(served.addr, &pki.ca_pem(), Some(&nobody))
        .await
        .expect("connect");
    let err = GateServiceClient::new(nobody_channel)
        .check_trade(CheckTradeRequest {
            account_id: "A".into(),
            ..Default::default()
        })
        .await
        .expect_err("no principal");
    assert_eq!(err.code(), Code::Unauthenticated);
    // Expired, foreign or missing certificates never get past the handshake.
    for (what, identity) in [
        ("expired", Some(&expired)),
        ("foreign", Some(&forged)),
        ("none", None),
    ] {
        let refused = match tls_channel(served.addr, &pki.ca_pem(), identity).await {
            Err(_) => true,
            Ok(channel) => GateServiceClient::new(channel)
                .check_trade(CheckTradeRequest {
                    account_id: "A".into(),
                    ..Default::default()
                })
                .await
                .is_err_and(|s| s.code() == Code::Unavailable || s.code() == Code::Unknown),
        };
        assert!(refused, "{what} certificate accepted");
    }
    served.stop().await;
}

#[test]
fn tls_certificates_are_reread_on_sighup() {
    let dir = tempfile::tempdir().expect("dir");
    let first = Pki::new("first CA");
    let second = Pki::new("second CA");
    let (cert, key) = first.issue("riskgate", &["localhost"], false, false);
    let cert_path = write(dir.path(), "server.pem", &cert);
    let key_path = write(dir.path(), "server.key", &key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = write(
        dir.path(),
        "riskgate.toml",
        &format!(
            "[store]\nkind = \"memory\"\n[tls]\ncert = \"{cert_path}\"\nkey = \"{key_path}\"\n"
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .args(["serve", "--config", &config])
        .env("RISKGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("serve");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| loop {
        let line = lines.recv_timeout(PATIENCE).expect("log line");
        if line.contains(needle) {
            return;
        }
    };
    wait_for("riskgate serving");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let healthy = |ca: String| {
        runtime.block_on(async move {
            match tls_channel(addr, &ca, None).await {
                Ok(channel) => HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
    };
    assert!(healthy(first.ca_pem()));
    assert!(!healthy(second.ca_pem()));
    let (cert, key) = second.issue("riskgate", &["localhost"], false, false);
    std::fs::write(&cert_path, cert).expect("rotate cert");
    std::fs::write(&key_path, key).expect("rotate key");
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    wait_for("TLS certificates re-read");
    assert!(
        healthy(second.ca_pem()),
        "new connections get the new certificate"
    );
    assert!(!healthy(first.ca_pem()));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(child.wait().expect("exit").success());
}

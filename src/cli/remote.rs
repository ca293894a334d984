//! The one-shot operator commands: `status`, `reset`, `trip`.

use super::output::{say, sayln};
use std::process::ExitCode;
use std::time::Duration;

use std::sync::OnceLock;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::{render, ActionArgs, CliError, Target};
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::monitor_service_client::MonitorServiceClient;
use crate::proto::{
    AuditRecord, GetBreakerRequest, GetClusterRequest, GetConfigRequest, Halt, HaltAllRequest,
    HaltGroupRequest, Layer, ListAuditRecordsRequest, ListBreakersRequest, ListHaltsRequest, Mode,
    ResetBreakerRequest, ResumeAllRequest, ResumeGroupRequest, SetAccountSettingsRequest,
    SetModeRequest, TripBreakerRequest,
};

/// A hold longer than this is worth a second look (`trip --for 100y` is usually a slip).
const LONG_HOLD: Duration = Duration::from_secs(30 * 86_400);

/// How long a one-shot command waits for the server.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How this command reaches the server beyond its address: TLS material and a token.
#[derive(Clone, Debug, Default)]
struct ClientOptions {
    tls: Option<ClientTlsConfig>,
    token: Option<MetadataValue<Ascii>>,
    /// How long a one-shot command waits for an answer (`--timeout`).
    timeout: Option<Duration>,
}

static CLIENT: OnceLock<ClientOptions> = OnceLock::new();

/// Reads the command's TLS files and token, once, before it connects.
pub(super) fn configure(target: &Target) -> Result<(), CliError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| CliError::Refused(format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = None;
    if target.tls_ca.is_some() || target.tls_cert.is_some() || target.addr.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &target.tls_ca {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&target.tls_cert, &target.tls_key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(CliError::Refused(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        }
        if let Some(name) = &target.tls_server_name {
            config = config.domain_name(name.clone());
        }
        tls = Some(config);
    }
    let token = match &target.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| CliError::Refused("the token must be printable ASCII".into()))?,
        ),
        None => None,
    };
    if !(target.timeout.is_finite() && target.timeout > 0.0 && target.timeout <= 3600.0) {
        return Err(CliError::Refused(format!(
            "--timeout must be a number of seconds > 0 and <= 3600, not {}",
            target.timeout
        )));
    }
    let timeout = Some(Duration::from_secs_f64(target.timeout));
    let _ = CLIENT.set(ClientOptions {
        tls,
        token,
        timeout,
    });
    Ok(())
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone)]
pub(super) struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

/// A connection to the server, with the token on every call.
pub(super) type Conn = InterceptedService<Channel, Token>;

/// Connects to the server at `addr` (`host:port` or a URI).
pub(super) async fn connect(addr: &str, call_timeout: Option<Duration>) -> Result<Conn, CliError> {
    let unreachable = |detail: String| CliError::Unreachable {
        addr: addr.to_owned(),
        detail,
    };
    let options = CLIENT.get().cloned().unwrap_or_default();
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else if options.tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let mut endpoint = Endpoint::from_shared(uri)
        .map_err(|e| unreachable(error_chain(&e)))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = options.tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| unreachable(error_chain(&e)))?;
    }
    // A one-shot command waits as long as --timeout says; a health check its own short time.
    let timeout = match call_timeout {
        Some(CALL_TIMEOUT) => options.timeout.or(call_timeout),
        other => other,
    };
    if let Some(timeout) = timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))?;
    Ok(InterceptedService::new(channel, Token(options.token)))
}

/// Refuses to act on an account riskgate has never seen, a likely typo, unless `new` says it
/// is meant (a pre-emptive trip of an account before its first order).
async fn known(addr: &str, account_id: &str, new: bool) -> Result<(), CliError> {
    let mut client = MonitorServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    match client
        .get_breaker(GetBreakerRequest {
            account_id: account_id.to_owned(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::NotFound && new => {
            eprintln!("riskgate: note: {account_id} has never been seen; acting on it as a new account (--new)");
            Ok(())
        }
        Err(status) if status.code() == Code::NotFound => Err(CliError::Refused(format!(
            "{account_id} has never been seen by riskgate (a typo? `riskgate status` lists the accounts); to act on it before its first order, pass --new"
        ))),
        Err(status) => Err(call_error(addr, status)),
    }
}

/// Who acts: the operator given, or with a token the principal it names (the server records
/// that one); never a made-up name.
fn who(operator: String) -> Result<String, CliError> {
    let has_token = CLIENT.get().is_some_and(|o| o.token.is_some());
    if operator.trim().is_empty() && !has_token {
        return Err(CliError::Refused(
            "who acts? pass --operator NAME ($USER is not set), or a --token naming the principal"
                .into(),
        ));
    }
    Ok(operator)
}

/// A refused or failed call, as one line.
pub(super) fn call_error(addr: &str, status: Status) -> CliError {
    let timed_out = status.code() == Code::DeadlineExceeded
        || (status.code() == Code::Cancelled && status.message().contains("Timeout"));
    if timed_out {
        let waited = CLIENT.get().and_then(|o| o.timeout).unwrap_or(CALL_TIMEOUT);
        return CliError::Unreachable {
            addr: addr.to_owned(),
            detail: format!(
                "no answer within {}: something accepts connections there but does not answer (a riskgate that is overloaded or paused, or not riskgate); --timeout waits longer",
                crate::core::human_duration(waited)
            ),
        };
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => CliError::Unreachable {
            addr: addr.to_owned(),
            detail: status.message().to_owned(),
        },
        code => CliError::Refused(format!("{code:?}: {}", status.message())),
    }
}

/// An error and its sources on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The operator action that tripped the account last, from the audit trail, if this principal
/// may read it.
async fn latest_trip(channel: Conn, account_id: &str) -> Option<AuditRecord> {
    let page = AdminServiceClient::new(channel)
        .list_audit_records(ListAuditRecordsRequest {
            account_id: account_id.to_owned(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    page.records
        .into_iter()
        .find(|r| r.action == crate::proto::AuditAction::Trip as i32)
}

/// The halts in force, for the banner over a status; a principal that may not read them (it
/// lacks the operator role) is told so instead.
async fn halts_banner(
    addr: &str,
    channel: Conn,
    covering: Option<&[String]>,
) -> Result<String, CliError> {
    match AdminServiceClient::new(channel)
        .list_halts(ListHaltsRequest {})
        .await
    {
        Ok(answer) => {
            let halts: Vec<Halt> = answer
                .into_inner()
                .halts
                .into_iter()
                .filter(|h| match covering {
                    None => true,
                    Some(groups) => h.layer == Layer::Firm as i32 || groups.contains(&h.group),
                })
                .collect();
            Ok(render::halt_banner(&halts))
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => {
            Ok("(halts not shown: reading them needs the operator role)\n".to_owned())
        }
        Err(status) => Err(call_error(addr, status)),
    }
}

pub(super) async fn status(
    addr: &str,
    account: Option<String>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let channel = connect(addr, Some(CALL_TIMEOUT)).await?;
    let mut client = MonitorServiceClient::new(channel.clone());
    match account {
        Some(account_id) => {
            let response = client
                .get_breaker(GetBreakerRequest { account_id })
                .await
                .map_err(|s| call_error(addr, s))?;
            if let Some(breaker) = response.into_inner().breaker {
                if json {
                    sayln!("{}", render::breaker_json(&breaker));
                    return Ok(ExitCode::SUCCESS);
                }
                let banner = halts_banner(addr, channel.clone(), Some(&breaker.groups)).await?;
                let trip = if breaker.tripped_by_operator {
                    latest_trip(channel.clone(), &breaker.account_id).await
                } else {
                    None
                };
                say!(
                    "{banner}{}",
                    render::breaker_detail(&breaker, trip.as_ref())
                );
            }
        }
        None => {
            let mut breakers = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_breakers(ListBreakersRequest {
                        state: 0,
                        // The largest page the server gives: each page reads every breaker.
                        page_size: 10_000,
                        page_token,
                    })
                    .await
                    .map_err(|s| call_error(addr, s))?
                    .into_inner();
                breakers.extend(page.breakers);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if json {
                for breaker in &breakers {
                    sayln!("{}", render::breaker_json(breaker));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let banner = halts_banner(addr, channel.clone(), None).await?;
            say!("{banner}{}", render::breaker_table(&breakers));
        }
    }
    if let Some(line) = answered_by(channel).await {
        sayln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `riskgate halts`: the halts in force.
pub(super) async fn halts(addr: &str, json: bool) -> Result<ExitCode, CliError> {
    let halts = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?)
        .list_halts(ListHaltsRequest {})
        .await
        .map_err(|s| call_error(addr, s))?
        .into_inner()
        .halts;
    if json {
        for halt in &halts {
            sayln!("{}", render::halt_json(halt));
        }
    } else if halts.is_empty() {
        sayln!("no halt in force");
    } else {
        say!("{}", render::halt_banner(&halts));
    }
    Ok(ExitCode::SUCCESS)
}

/// Which cluster node answered, and its role; `None` on a single node (or a server that
/// predates clusters).
async fn answered_by(channel: Conn) -> Option<String> {
    let cluster = MonitorServiceClient::new(channel)
        .get_cluster(GetClusterRequest {})
        .await
        .ok()?
        .into_inner();
    cluster.clustered.then(|| render::answered_by(&cluster))
}

/// `riskgate cluster`: the members, the leader and its epoch, lag and lease time left.
pub(super) async fn cluster(addr: &str, json: bool) -> Result<ExitCode, CliError> {
    let channel = connect(addr, Some(CALL_TIMEOUT)).await?;
    let cluster = MonitorServiceClient::new(channel)
        .get_cluster(GetClusterRequest {})
        .await
        .map_err(|s| call_error(addr, s))?
        .into_inner();
    if json {
        for line in render::cluster_json(&cluster) {
            sayln!("{line}");
        }
    } else {
        say!("{}", render::cluster(&cluster));
    }
    Ok(ExitCode::SUCCESS)
}

/// An operator action: `riskgate reset` or `riskgate trip`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Action {
    Reset,
    /// Held for the duration, or until reset.
    Trip(Option<Duration>),
}

pub(super) async fn act(
    addr: &str,
    kind: Action,
    account_id: String,
    new: bool,
    action: ActionArgs,
) -> Result<ExitCode, CliError> {
    let (reason, operator) = (action.reason, who(action.operator)?);
    known(addr, &account_id, new).await?;
    let mut client = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let breaker = match kind {
        Action::Reset => client
            .reset_breaker(ResetBreakerRequest {
                account_id,
                reason,
                operator,
            })
            .await
            .map(|r| r.into_inner().breaker),
        Action::Trip(hold) => client
            .trip_breaker(TripBreakerRequest {
                account_id,
                reason,
                operator,
                until: hold
                    .map(|hold| prost_types::Timestamp::from(std::time::SystemTime::now() + hold)),
            })
            .await
            .map(|r| r.into_inner().breaker),
    }
    .map_err(|s| call_error(addr, s))?;
    if let Some(breaker) = breaker {
        let (verb, note) = match kind {
            Action::Reset => ("reset", String::new()),
            Action::Trip(None) => ("tripped", ", held until reset".to_owned()),
            Action::Trip(Some(hold)) if hold.as_secs() < 86_400 => (
                "tripped",
                format!(
                    ", held for {}, then recovery is tested",
                    crate::core::human_duration(hold)
                ),
            ),
            Action::Trip(Some(hold)) => (
                "tripped",
                format!(
                    ", held until recovery is tested {}",
                    render::ahead(hold, std::time::SystemTime::now() + hold)
                ),
            ),
        };
        if let Action::Trip(Some(hold)) = kind {
            if hold > LONG_HOLD {
                eprintln!(
                    "riskgate: note: {} is held open for {} days; `riskgate reset {}` lifts it sooner",
                    breaker.account_id,
                    hold.as_secs() / 86_400,
                    breaker.account_id
                );
            }
        }
        sayln!(
            "{verb} {}: now {}{note}",
            breaker.account_id,
            render::state_name(breaker.state)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn set_mode(
    addr: &str,
    account_id: String,
    mode: &str,
    new: bool,
    action: ActionArgs,
) -> Result<ExitCode, CliError> {
    let mode = match mode {
        "enforce" => Mode::Enforce,
        "shadow" => Mode::Shadow,
        "disabled" => Mode::Disabled,
        _ => Mode::Unspecified,
    };
    let operator = who(action.operator)?;
    known(addr, &account_id, new).await?;
    let mut client = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let breaker = client
        .set_mode(SetModeRequest {
            account_id,
            mode: mode.into(),
            reason: action.reason,
            operator,
        })
        .await
        .map_err(|s| call_error(addr, s))?
        .into_inner()
        .breaker;
    if let Some(b) = breaker {
        sayln!(
            "{}: mode {}{}",
            b.account_id,
            render::mode_name(b.mode),
            if b.mode_set_by_operator {
                " (set by an operator)"
            } else {
                " (from configuration)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `riskgate halt` / `riskgate resume`, firm-wide or for a group.
pub(super) async fn halt(
    addr: &str,
    halt: bool,
    group: Option<String>,
    action: ActionArgs,
) -> Result<ExitCode, CliError> {
    let (reason, operator) = (action.reason, who(action.operator)?);
    let mut client = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let scope = group
        .as_ref()
        .map_or("firm-wide".to_owned(), |g| format!("group {g}"));
    let (halts, changed) = match (halt, group) {
        (true, None) => client
            .halt_all(HaltAllRequest { reason, operator })
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.halts, r.began)
            }),
        (false, None) => client
            .resume_all(ResumeAllRequest { reason, operator })
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.halts, r.ended)
            }),
        (true, Some(group)) => client
            .halt_group(HaltGroupRequest {
                group,
                reason,
                operator,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.halts, r.began)
            }),
        (false, Some(group)) => client
            .resume_group(ResumeGroupRequest {
                group,
                reason,
                operator,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                (r.halts, r.ended)
            }),
    }
    .map_err(|s| call_error(addr, s))?;
    // Said first, so that what follows (the halts in force) is not read as the answer.
    match (halt, changed) {
        (true, true) => {}
        (true, false) => sayln!("{scope} was already halted: that halt stays, as it was"),
        (false, true) => sayln!("resumed {scope}"),
        (false, false) => sayln!("{scope} was not halted: nothing to resume"),
    }
    say!(
        "{}",
        if halt {
            render::halts(&halts)
        } else {
            render::halt_banner(&halts)
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn config(addr: &str) -> Result<ExitCode, CliError> {
    let mut client = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let config = client
        .get_config(GetConfigRequest {})
        .await
        .map_err(|s| call_error(addr, s))?
        .into_inner();
    sayln!(
        "# riskgate configuration in force, version {}",
        config.version
    );
    if !config.reload_refused.is_empty() {
        sayln!(
            "# NOTE: the configuration file differs: its last reload was refused ({}); what follows is still in force",
            config.reload_refused
        );
    }
    if !config.restart_needed.is_empty() {
        sayln!(
            "# NOTE: the configuration file changes sections that take effect only after a restart: {}; what follows is what runs",
            config.restart_needed.join(", ")
        );
    }
    say!("{}", config.toml);
    Ok(ExitCode::SUCCESS)
}

/// `riskgate config ACCOUNT`: the account's settings in force, and where each comes from.
pub(super) async fn account_config(addr: &str, account_id: String) -> Result<ExitCode, CliError> {
    let mut client = MonitorServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let breaker = client
        .get_breaker(GetBreakerRequest {
            account_id: account_id.clone(),
        })
        .await
        .map_err(|s| match s.code() {
            Code::NotFound => CliError::Refused(format!(
                "{account_id} has never been seen by riskgate; `riskgate config` shows the settings every account starts with"
            )),
            _ => call_error(addr, s),
        })?
        .into_inner()
        .breaker;
    if let Some(b) = breaker {
        say!("{}", render::settings_in_force(&b));
    }
    Ok(ExitCode::SUCCESS)
}

/// `riskgate settings ACCOUNT KEY=VALUE... --clear KEY...`.
pub(super) async fn set_settings(
    addr: &str,
    account_id: String,
    set: Vec<String>,
    clear: Vec<String>,
    new: bool,
    action: ActionArgs,
) -> Result<ExitCode, CliError> {
    let mut settings = crate::core::Overrides::default();
    for pair in &set {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            CliError::Refused(format!(
                "{pair:?} is not KEY=VALUE (for example failure_threshold=3)"
            ))
        })?;
        settings
            .set_text(key.trim(), value)
            .map_err(|e| CliError::Refused(e.to_string()))?;
    }
    let clear = if clear.iter().any(|k| k == "all") {
        crate::core::SETTING_KEYS
            .iter()
            .map(|k| (*k).to_owned())
            .chain(["failure_kinds".to_owned()])
            .collect()
    } else {
        clear
    };
    if settings.is_empty() && clear.is_empty() {
        return Err(CliError::Refused(
            "nothing to change: give KEY=VALUE settings or --clear KEY (`riskgate config ACCOUNT` shows the settings in force)".into(),
        ));
    }
    let operator = who(action.operator)?;
    known(addr, &account_id, new).await?;
    let mut client = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let breaker = client
        .set_account_settings(SetAccountSettingsRequest {
            account_id,
            settings: Some(crate::api::convert::account_settings(&settings)),
            clear,
            reason: action.reason,
            operator,
        })
        .await
        .map_err(|s| call_error(addr, s))?
        .into_inner()
        .breaker;
    if let Some(b) = breaker {
        say!("{}", render::settings_in_force(&b));
    }
    Ok(ExitCode::SUCCESS)
}

/// Which audit records `riskgate audit` reads, and how it prints them.
pub(super) struct AuditQuery {
    pub account: Option<String>,
    /// 0: every record.
    pub limit: usize,
    pub since: Option<std::time::SystemTime>,
    pub until: Option<std::time::SystemTime>,
    pub format: super::AuditFormat,
}

pub(super) async fn audit(addr: &str, query: AuditQuery) -> Result<ExitCode, CliError> {
    let mut client = AdminServiceClient::new(connect(addr, Some(CALL_TIMEOUT)).await?);
    let limit = if query.limit == 0 {
        usize::MAX
    } else {
        query.limit
    };
    let timestamp = |at: std::time::SystemTime| prost_types::Timestamp::from(at);
    let mut records = Vec::new();
    let mut page_token = String::new();
    while records.len() < limit {
        let page = client
            .list_audit_records(ListAuditRecordsRequest {
                account_id: query.account.clone().unwrap_or_default(),
                since: query.since.map(timestamp),
                until: query.until.map(timestamp),
                page_size: u32::try_from(limit - records.len()).unwrap_or(u32::MAX),
                page_token,
            })
            .await
            .map_err(|s| call_error(addr, s))?
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    records.truncate(limit);
    match query.format {
        super::AuditFormat::Table => say!("{}", render::audit_table(&records)),
        super::AuditFormat::Jsonl => {
            for record in &records {
                sayln!("{}", render::audit_json(record));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a health check waits: orchestrators run it often and need a quick answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

pub(super) async fn health(addr: &str, service: String) -> Result<ExitCode, CliError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut client = HealthClient::new(connect(addr, Some(HEALTH_TIMEOUT)).await?);
    let response = client
        .check(HealthCheckRequest {
            service: service.clone(),
        })
        .await
        .map_err(|s| call_error(addr, s))?;
    let status =
        ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
    let name = if service.is_empty() {
        "riskgate"
    } else {
        service.as_str()
    };
    sayln!("{name}: {}", status.as_str_name());
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

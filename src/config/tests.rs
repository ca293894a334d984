use std::io::Write;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

fn error_of(result: Result<Config, ConfigError>) -> String {
    result
        .expect_err("configuration should be refused")
        .to_string()
}

#[test]
fn the_embedded_default_parses_and_matches_the_documented_defaults() {
    let config = Config::load_with_env(None, env(&[])).expect("default config");
    let options = config.registry_options();
    assert_eq!(*options.rulebook.defaults, Settings::default());
    assert_eq!(options.max_accounts, 100_000);
    assert_eq!(
        config.listen_addr().expect("listen"),
        "127.0.0.1:50051".parse().expect("addr")
    );
    assert_eq!(config.log.format, LogFormat::Human);
    assert_eq!(config.store.kind, StoreKind::Sqlite);
    assert_eq!(config.store.path, PathBuf::from("./riskgate-data"));
    assert!(options.rulebook.overrides.is_empty());
}

#[test]
fn a_file_overrides_the_default_and_the_environment_overrides_both() {
    let f = file(
        "[breaker]\nfailure_threshold = 7\nopen_timeout_secs = 0.25\n\n[accounts.\"ACC-1\"]\nfailure_threshold = 2\n",
    );
    let config = Config::load_with_env(
        Some(f.path()),
        env(&[
            ("RISKGATE__BREAKER__FAILURE_THRESHOLD", "3"),
            ("RISKGATE__SERVER__LISTEN", "127.0.0.1:0"),
        ]),
    )
    .expect("config");
    let options = config.registry_options();
    assert_eq!(options.rulebook.defaults.failure_threshold, 3);
    assert_eq!(
        options.rulebook.defaults.open_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(
        options.rulebook.defaults.failure_window,
        Duration::from_secs(60)
    );
    // Per-account overrides keep the account id's case and inherit the rest.
    let acc = &options.rulebook.overrides["ACC-1"];
    assert_eq!(acc.failure_threshold, 2);
    assert_eq!(acc.open_timeout, Duration::from_millis(250));
    assert_eq!(config.server.listen, "127.0.0.1:0");
}

#[test]
fn an_invalid_value_names_the_key_and_the_rule() {
    let message = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__BREAKER__FAILURE_THRESHOLD", "0")]),
    ));
    assert!(
        message.contains("breaker.failure_threshold must be >= 1"),
        "{message}"
    );

    let f = file("[accounts.\"ACC-1\"]\nopen_timeout_secs = -1\n");
    let message = error_of(Config::load_with_env(Some(f.path()), env(&[])));
    assert!(
        message.contains("accounts.\"ACC-1\".open_timeout_secs must be a number of seconds > 0"),
        "{message}"
    );

    let message = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__SERVER__LISTEN", "nowhere")]),
    ));
    assert!(
        message.contains("server.listen must be an address"),
        "{message}"
    );

    let f = file("[accounts.\"bad id\"]\nfailure_threshold = 2\n");
    let message = error_of(Config::load_with_env(Some(f.path()), env(&[])));
    assert!(message.contains("names an invalid account"), "{message}");
}

#[test]
fn unknown_keys_and_missing_files_are_refused() {
    let f = file("[breaker]\nfailure_treshold = 3\n");
    let message = error_of(Config::load_with_env(Some(f.path()), env(&[])));
    assert!(message.contains("failure_treshold"), "{message}");

    let message = error_of(Config::load_with_env(
        Some(Path::new("/nonexistent/riskgate.toml")),
        env(&[]),
    ));
    assert!(message.contains("/nonexistent/riskgate.toml"), "{message}");
}

#[test]
fn the_audit_trail_is_kept_a_year_by_default_and_its_retention_is_validated() {
    let config = Config::load_with_env(None, env(&[])).expect("default");
    let retention = config.audit_retention();
    assert_eq!(
        retention.max_age,
        Some(std::time::Duration::from_secs(365 * 86_400))
    );
    assert_eq!(retention.records, None);
    let forever = Config::load_with_env(
        None,
        env(&[
            ("RISKGATE__AUDIT__RETAIN_DAYS", "0"),
            ("RISKGATE__AUDIT__RETAIN_RECORDS", "1000"),
        ]),
    )
    .expect("kept by count only");
    assert_eq!(forever.audit_retention().max_age, None);
    assert_eq!(forever.audit_retention().records, Some(1000));
    let refused = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__AUDIT__RETAIN_DAYS", "-1")]),
    ));
    assert!(refused.contains("audit.retain_days"), "{refused}");
}

#[test]
fn a_cluster_is_configured_from_the_environment_and_checked() {
    let config = Config::load_with_env(
        None,
        env(&[
            (
                "RISKGATE__CLUSTER__ETCD_ENDPOINTS",
                "http://etcd-0:2379,http://etcd-1:2379",
            ),
            ("RISKGATE__CLUSTER__NODE_ID", "riskgate-0"),
            ("RISKGATE__CLUSTER__ADVERTISE", "riskgate-0.nodes:50051"),
            // A comma elsewhere stays text.
            ("RISKGATE__LOG__LEVEL", "info,riskgate=debug"),
        ]),
    )
    .expect("config");
    assert!(config.cluster.enabled());
    assert_eq!(
        config.cluster.etcd_endpoints,
        ["http://etcd-0:2379", "http://etcd-1:2379"]
    );
    assert_eq!(config.cluster.node_id, "riskgate-0");
    assert_eq!(config.log.level, "info,riskgate=debug");
    assert!(!Config::load_with_env(None, env(&[]))
        .expect("default")
        .cluster
        .enabled());

    let message = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__CLUSTER__ETCD_ENDPOINTS", "http://etcd:2379")]),
    ));
    assert!(message.contains("cluster.node_id"), "{message}");
    let message = error_of(Config::load_with_env(
        None,
        env(&[
            ("RISKGATE__CLUSTER__ETCD_ENDPOINTS", "etcd:2379"),
            ("RISKGATE__CLUSTER__NODE_ID", "a"),
            ("RISKGATE__CLUSTER__ADVERTISE", "a:1"),
        ]),
    ));
    assert!(message.contains("cluster.etcd_endpoints"), "{message}");
    let message = error_of(Config::load_with_env(
        None,
        env(&[
            ("RISKGATE__CLUSTER__ETCD_ENDPOINTS", "http://etcd:2379"),
            ("RISKGATE__CLUSTER__NODE_ID", "a"),
            ("RISKGATE__CLUSTER__ADVERTISE", "a:1"),
            ("RISKGATE__CLUSTER__MAX_TXN_OPS", "1000000"),
        ]),
    ));
    assert!(message.contains("cluster.max_txn_ops"), "{message}");
}

#[test]
fn a_console_without_authentication_stays_on_loopback_unless_told_otherwise() {
    let refused = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__CONSOLE__LISTEN", "0.0.0.0:8080")]),
    ));
    assert!(
        refused.contains("console.listen") && refused.contains("auth.mode is \"none\""),
        "{refused}"
    );
    let told = Config::load_with_env(
        None,
        env(&[
            ("RISKGATE__CONSOLE__LISTEN", "0.0.0.0:8080"),
            ("RISKGATE__CONSOLE__ALLOW_REMOTE_WITHOUT_AUTH", "true"),
        ]),
    )
    .expect("allowed explicitly");
    assert_eq!(told.console.listen, "0.0.0.0:8080");
    let loopback = Config::load_with_env(
        None,
        env(&[("RISKGATE__CONSOLE__LISTEN", "127.0.0.1:9000")]),
    )
    .expect("loopback without authentication");
    assert!(!loopback.console.best_effort);
    let bad = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__CONSOLE__LISTEN", "localhost")]),
    ));
    assert!(bad.contains("console.listen must be an address"), "{bad}");
    let short = error_of(Config::load_with_env(
        None,
        env(&[("RISKGATE__CONSOLE__SESSION_IDLE_SECS", "5")]),
    ));
    assert!(short.contains("console.session_idle_secs"), "{short}");
}

#[test]
fn the_quick_start_serves_the_console_on_loopback_best_effort() {
    let mut config = Config::load_with_env(None, env(&[])).expect("default");
    assert!(config.console.listen.is_empty(), "off by default");
    if std::env::var_os("RISKGATE__CONSOLE__LISTEN").is_none() {
        config.console.quick_start();
        assert_eq!(config.console.listen, ConsoleConfig::QUICK_START);
        assert!(config.console.best_effort);
        assert!(config.validate().is_ok());
    }
    let mut given = Config::load_with_env(
        None,
        env(&[("RISKGATE__CONSOLE__LISTEN", "127.0.0.1:9000")]),
    )
    .expect("given");
    given.console.quick_start();
    assert_eq!(
        given.console.listen, "127.0.0.1:9000",
        "what is given stays"
    );
    assert!(!given.console.best_effort);
}

//! `riskgate watch`: prints every state change as one line, following until Ctrl-C. After a
//! lost connection it reconnects and resumes after the last sequence it saw, so no change is
//! missed or printed twice; if the server no longer retains that far back, it says so and
//! starts again from a fresh snapshot.

use super::output::sayln;
use std::process::ExitCode;
use std::time::Duration;

use tonic::Code;

use super::remote::{call_error, connect};
use super::{render, CliError};
use crate::proto::monitor_service_client::MonitorServiceClient;
use crate::proto::watch_events_response::Kind;
use crate::proto::WatchEventsRequest;

const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn follow(addr: &str, accounts: Vec<String>) -> Result<ExitCode, CliError> {
    tokio::select! {
        result = follow_until_error(addr, accounts) => result,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}

async fn follow_until_error(addr: &str, accounts: Vec<String>) -> Result<ExitCode, CliError> {
    // The last sequence this watcher is current as of; None until a snapshot arrived.
    let mut after: Option<u64> = None;
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        let outcome = watch_once(
            addr,
            &accounts,
            &mut after,
            &mut connected_once,
            &mut backoff,
        )
        .await;
        match outcome {
            Err(CliError::Unreachable { .. }) if connected_once => {}
            Err(error) => return Err(error),
            Ok(()) => {}
        }
        eprintln!(
            "riskgate watch: reconnecting in {}",
            crate::core::human_duration(backoff)
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: prints until the stream ends. `Ok` means: reconnect.
async fn watch_once(
    addr: &str,
    accounts: &[String],
    after: &mut Option<u64>,
    connected_once: &mut bool,
    backoff: &mut Duration,
) -> Result<(), CliError> {
    let mut client = MonitorServiceClient::new(connect(addr, None).await?);
    let request = WatchEventsRequest {
        account_ids: accounts.to_vec(),
        after_sequence: *after,
    };
    let mut stream = match client.watch_events(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == Code::OutOfRange => {
            eprintln!(
                "riskgate watch: {}; starting from a fresh snapshot",
                status.message()
            );
            *after = None;
            return Ok(());
        }
        Err(status) => return Err(call_error(addr, status)),
    };
    if *connected_once {
        // Said, so that the last line is not "reconnecting" while events flow again.
        match *after {
            Some(sequence) => {
                eprintln!("riskgate watch: reconnected to {addr}; resuming after #{sequence}")
            }
            None => eprintln!("riskgate watch: reconnected to {addr}; reading a fresh snapshot"),
        }
    }
    *connected_once = true;
    *backoff = Duration::from_millis(250);
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.kind {
                Some(Kind::Snapshot(breaker)) => sayln!("{}", render::snapshot_line(&breaker)),
                Some(Kind::SnapshotComplete(complete)) => {
                    *after = Some(complete.as_of_sequence);
                    sayln!(
                        "-- {} breakers as of sequence {}; following",
                        complete.breaker_count,
                        complete.as_of_sequence
                    );
                }
                Some(Kind::Event(event)) => {
                    *after = Some(event.sequence);
                    sayln!("{}", render::event_line(&event));
                }
                Some(Kind::Heartbeat(beat)) => *after = Some(beat.sequence),
                None => {}
            },
            Ok(None) => {
                eprintln!("riskgate watch: the server ended the stream");
                return Ok(());
            }
            Err(status) => {
                eprintln!("riskgate watch: stream ended: {}", status.message());
                return Ok(());
            }
        }
    }
}

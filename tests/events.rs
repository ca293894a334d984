//! WatchEvents: snapshot, live changes, resume, OUT_OF_RANGE, heartbeats, laggards, shutdown.

mod common;

use common::*;
use riskgate::proto::watch_events_response::Kind;
use riskgate::proto::*;
use tonic::Code;

#[tokio::test]
async fn a_watcher_gets_a_snapshot_then_every_change_with_consecutive_sequences() {
    let server = TestServer::start("").await;
    server.fail("ACC-1", 5).await; // OPEN: event 1
    server.check("ACC-2").await; // CLOSED, no event
    let mut stream = server.watch(&[], None).await;
    let (snapshot, complete) = read_snapshot(&mut stream).await;
    assert_eq!(complete.as_of_sequence, 1);
    assert_eq!(complete.breaker_count, 2);
    let states: Vec<_> = snapshot
        .iter()
        .map(|b| (b.account_id.as_str(), state(b.state)))
        .collect();
    assert_eq!(
        states,
        vec![
            ("ACC-1", BreakerState::Open),
            ("ACC-2", BreakerState::Closed)
        ]
    );

    server.trip("ACC-2", "manual halt").await;
    server.reset("ACC-1", "fixed").await;
    server.trip("ACC-3", "pre-emptive").await;
    let events = [
        next_event(&mut stream).await,
        next_event(&mut stream).await,
        next_event(&mut stream).await,
    ];
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.sequence, e.account_id.as_str(), state(e.to_state)))
        .collect();
    assert_eq!(
        seen,
        vec![
            (2, "ACC-2", BreakerState::Open),
            (3, "ACC-1", BreakerState::Closed),
            (4, "ACC-3", BreakerState::Open)
        ]
    );
    let reset = &events[1];
    assert_eq!(state(reset.from_state), BreakerState::Open);
    assert_eq!(reset.cause, TransitionCause::OperatorReset as i32);
    assert_eq!(reset.operator, "alice");
    assert_eq!(reset.operator_reason, "fixed");
    assert!(
        reset.reason.contains("reset by alice: fixed"),
        "{}",
        reset.reason
    );
    assert!(reset.time.is_some());
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_of_some_accounts_sees_only_theirs() {
    let server = TestServer::start("").await;
    server.check("B").await;
    let mut stream = server.watch(&["B", "C"], None).await;
    let (snapshot, _) = read_snapshot(&mut stream).await;
    assert_eq!(snapshot.len(), 1, "C has no breaker yet");
    server.trip("A", "x").await;
    server.trip("B", "x").await;
    server.trip("C", "x").await;
    assert_eq!(next_event(&mut stream).await.account_id, "B");
    assert_eq!(next_event(&mut stream).await.account_id, "C");
    server.stop().await;
}

#[tokio::test]
async fn resuming_replays_exactly_what_was_missed() {
    let server = TestServer::start("").await;
    let mut stream = server.watch(&[], None).await;
    let (_, complete) = read_snapshot(&mut stream).await;
    server.trip("A", "one").await;
    let seen = next_event(&mut stream).await.sequence;
    drop(stream);

    server.reset("A", "two").await;
    server.trip("B", "three").await;
    server.trip("C", "four").await;

    let mut resumed = server.watch(&[], Some(seen)).await;
    let replayed: Vec<_> = [
        next_kind(&mut resumed).await,
        next_kind(&mut resumed).await,
        next_kind(&mut resumed).await,
    ]
    .into_iter()
    .map(|kind| match kind {
        Kind::Event(e) => e.sequence,
        other => panic!("a resumed watcher gets no snapshot, got {other:?}"),
    })
    .collect();
    assert_eq!(complete.as_of_sequence, 0);
    assert_eq!(replayed, vec![seen + 1, seen + 2, seen + 3]);
    // Then live.
    server.reset("B", "five").await;
    assert_eq!(next_event(&mut resumed).await.sequence, seen + 4);
    server.stop().await;
}

#[tokio::test]
async fn resuming_from_before_what_is_retained_is_out_of_range() {
    let server = TestServer::start("[events]\nretained = 3\n").await;
    for account in ["A", "B", "C", "D", "E", "F"] {
        server.trip(account, "x").await;
    }
    let status = server
        .monitor()
        .watch_events(WatchEventsRequest {
            account_ids: vec![],
            after_sequence: Some(1),
        })
        .await
        .expect_err("sequence 2 is no longer retained");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("re-read the snapshot"),
        "{}",
        status.message()
    );

    // The oldest retained event is 4: resuming after 3 still works.
    let mut stream = server.watch(&[], Some(3)).await;
    assert_eq!(next_event(&mut stream).await.sequence, 4);

    let status = server
        .monitor()
        .watch_events(WatchEventsRequest {
            account_ids: vec![],
            after_sequence: Some(100),
        })
        .await
        .expect_err("sequence 100 is in the future");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("ahead of the latest sequence 6"),
        "{}",
        status.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn an_idle_watcher_gets_heartbeats_with_the_current_sequence() {
    let server = TestServer::start("[events]\nheartbeat_secs = 0.05\n").await;
    server.trip("A", "x").await;
    let mut stream = server.watch(&[], None).await;
    read_snapshot(&mut stream).await;
    match next_kind(&mut stream).await {
        Kind::Heartbeat(beat) => {
            assert_eq!(beat.sequence, 1);
            assert!(beat.time.is_some());
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_ended_with_a_resume_point_and_can_resume() {
    let server = TestServer::start("[events]\nsubscriber_buffer = 8\nretained = 100000\n").await;
    let mut slow = server
        .slow_reader()
        .await
        .watch_events(WatchEventsRequest {
            account_ids: vec![],
            after_sequence: None,
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    read_snapshot(&mut slow).await;

    // Far more changes than the broadcast buffer, the stream's channel and the watcher's small
    // HTTP/2 window hold, while the slow watcher reads nothing. Bots are unaffected.
    for _ in 0..1_500 {
        server.trip("A", "x").await;
        server.reset("A", "y").await;
    }
    assert!(server.check("B").await.allowed);

    let mut last_seen = 0;
    let status = loop {
        match tokio::time::timeout(PATIENCE, slow.message())
            .await
            .expect("within patience")
        {
            Ok(Some(message)) => match message.kind {
                Some(Kind::Event(event)) => {
                    assert_eq!(event.sequence, last_seen + 1, "no gap before the end");
                    last_seen = event.sequence;
                }
                other => panic!("the watcher caught up instead of being ended: {other:?}"),
            },
            Ok(None) => panic!("the stream should end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let expected = format!("resume with after_sequence={last_seen}");
    assert!(
        status.message().contains(&expected),
        "{} should contain {expected}",
        status.message()
    );
    assert!(last_seen < 3_000, "the watcher really fell behind");

    let mut resumed = server.watch(&[], Some(last_seen)).await;
    assert_eq!(next_event(&mut resumed).await.sequence, last_seen + 1);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_watch_streams_with_a_status_naming_the_resume_point() {
    let server = TestServer::start("").await;
    server.trip("A", "x").await;
    let mut stream = server.watch(&[], None).await;
    read_snapshot(&mut stream).await;
    let stopping = tokio::spawn(server.stop());
    let status = loop {
        match tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("within patience")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream should end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("resume with after_sequence=1"),
        "{}",
        status.message()
    );
    stopping.await.expect("server stopped cleanly");
}

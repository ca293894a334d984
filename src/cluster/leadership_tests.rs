//! Leadership row by row, on hand-given instants: who may decide, when the fence falls, what
//! each event does; and, as a property, that an old leader has stopped before a new one starts.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const TTL: Duration = Duration::from_secs(3);

fn timing() -> LeaseTiming {
    LeaseTiming::for_ttl(TTL)
}

fn at(millis: u64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + millis * 1_000_000)
}

/// A leader that won at 0 (revision 10, epoch 7), caught up and past its first TTL.
fn serving() -> Leadership {
    let mut node = Leadership::new(timing());
    node.campaigning();
    node.won(7, 10, at(0), at(0));
    node.applied_through(10);
    node.renewed(at(2_900));
    node
}

#[test]
fn the_margin_is_a_third_of_the_ttl_within_bounds() {
    assert_eq!(timing().margin, Duration::from_secs(1));
    assert_eq!(
        LeaseTiming::for_ttl(Duration::from_secs(60)).margin,
        Duration::from_secs(2)
    );
    assert_eq!(
        LeaseTiming::for_ttl(Duration::from_millis(150)).margin,
        Duration::from_millis(75),
        "never more than half the TTL"
    );
}

#[test]
fn a_new_node_is_a_standby_and_decides_nothing() {
    let node = Leadership::new(timing());
    assert_eq!(node.role(), Role::Standby);
    assert_eq!(node.refusal(at(0)), Some(Refusal::NotLeader));
    assert_eq!(node.epoch(), None);
    assert_eq!(node.next_deadline(at(0)), None);
}

#[test]
fn a_winner_serves_once_caught_up() {
    let mut node = Leadership::new(timing());
    node.campaigning();
    assert_eq!(node.role(), Role::Candidate);
    node.won(7, 10, at(0), at(0));
    assert_eq!(node.role(), Role::Leader { epoch: 7 });
    assert_eq!(node.epoch(), Some(7));
    assert_eq!(
        node.refusal(at(0)),
        Some(Refusal::CatchingUp {
            applied: 0,
            won_at_revision: 10
        })
    );
    node.applied_through(9);
    assert!(matches!(
        node.refusal(at(0)),
        Some(Refusal::CatchingUp { applied: 9, .. })
    ));
    node.applied_through(10);
    assert_eq!(node.refusal(at(1_000)), None);
    assert!(node.may_decide(at(1_000)));
}

#[test]
fn a_settle_time_delays_serving_after_a_win() {
    let mut node = Leadership::new(LeaseTiming {
        settle: Duration::from_millis(500),
        ..timing()
    });
    node.won(7, 10, at(0), at(0));
    node.applied_through(10);
    assert_eq!(
        node.refusal(at(100)),
        Some(Refusal::WaitingOutOldLease { until: at(500) })
    );
    assert_eq!(node.next_deadline(at(100)), Some(at(500)));
    assert!(node.may_decide(at(500)));
}

#[test]
fn a_leader_stops_at_its_fence_measured_from_when_the_renewal_was_sent() {
    let mut node = serving();
    // Sent at 2.9 s: the fence is at 2.9 + 3 - 1 = 4.9 s, however late the answer came.
    assert_eq!(node.fence(), Some(at(4_900)));
    assert!(node.may_decide(at(4_899)));
    assert_eq!(node.refusal(at(4_900)), Some(Refusal::Fenced));
    // Read as of `now` even before a tick: a paused leader that wakes late allows nothing.
    assert_eq!(node.role(), Role::Leader { epoch: 7 });
    node.tick(at(4_899));
    assert_eq!(node.role(), Role::Leader { epoch: 7 });
    node.tick(at(4_900));
    assert_eq!(node.role(), Role::Fenced { epoch: 7 });
    assert_eq!(node.epoch(), None, "a fenced node writes nothing");
    assert_eq!(node.fence(), None);
}

#[test]
fn a_renewal_moves_the_fence_forward_never_back() {
    let mut node = serving();
    node.renewed(at(3_900));
    assert_eq!(node.fence(), Some(at(5_900)));
    // An answer to an earlier renewal, arriving late, does not pull the fence back.
    node.renewed(at(3_000));
    assert_eq!(node.fence(), Some(at(5_900)));
    // Nor does a renewal reach a node that is not leader.
    node.lost();
    node.renewed(at(9_000));
    assert_eq!(node.fence(), None);
    assert_eq!(node.refusal(at(4_000)), Some(Refusal::Fenced));
}

#[test]
fn a_lost_lease_or_a_lagging_watch_fences_at_once() {
    let mut node = serving();
    assert!(node.may_decide(at(3_500)));
    node.lost();
    assert_eq!(node.role(), Role::Fenced { epoch: 7 });
    assert_eq!(node.refusal(at(3_500)), Some(Refusal::Fenced));
}

#[test]
fn a_deposed_leader_fences_and_a_deposed_candidate_follows() {
    let mut leader = serving();
    leader.deposed();
    assert_eq!(leader.role(), Role::Fenced { epoch: 7 });
    leader.stood_down();
    assert_eq!(leader.role(), Role::Standby);
    assert_eq!(leader.refusal(at(3_500)), Some(Refusal::NotLeader));

    let mut candidate = Leadership::new(timing());
    candidate.campaigning();
    candidate.deposed();
    assert_eq!(candidate.role(), Role::Standby);
}

#[test]
fn a_fenced_node_that_wins_again_catches_up_again_under_its_new_epoch() {
    let mut node = serving();
    node.tick(at(10_000));
    assert_eq!(node.role(), Role::Fenced { epoch: 7 });
    node.campaigning();
    node.won(12, 30, at(10_000), at(10_000));
    assert_eq!(node.epoch(), Some(12));
    assert!(matches!(
        node.refusal(at(10_000)),
        Some(Refusal::CatchingUp { .. })
    ));
    node.applied_through(30);
    assert!(node.may_decide(at(10_500)));
    // Its fence runs from the renewal sent before the win.
    assert_eq!(node.refusal(at(12_000)), Some(Refusal::Fenced));
}

#[test]
fn the_next_deadline_is_the_fence() {
    let mut node = Leadership::new(timing());
    node.won(7, 10, at(0), at(0));
    // Fence at 2 s (sent at 0).
    assert_eq!(node.next_deadline(at(0)), Some(at(2_000)));
    node.renewed(at(1_500));
    assert_eq!(node.next_deadline(at(1_500)), Some(at(3_500)));
    node.renewed(at(2_900));
    assert_eq!(node.next_deadline(at(3_100)), Some(at(4_900)));
}

proptest! {
    /// Two nodes on clocks that run at different rates: the old leader's last acknowledged
    /// renewal was sent at `sent`, etcd received it `delay` later and expired the lease a TTL
    /// after that; the new leader won `after` the expiry. As long as the old node's clock runs
    /// no slower than `1 - margin/ttl` of real time, the old leader allows nothing from the
    /// moment the new leader could first serve, and in fact from the moment it won.
    #[test]
    fn an_old_leader_is_fenced_before_a_new_one_can_start(
        sent_ms in 0u64..10_000,
        delay_ms in 0u64..2_000,
        after_ms in 0u64..2_000,
        // The old node's clock rate, in thousandths of real time.
        rate in 667u64..1_500,
    ) {
        let timing = timing();
        let min_rate = 1.0 - timing.margin.as_secs_f64() / timing.ttl.as_secs_f64();
        prop_assume!(rate as f64 / 1000.0 >= min_rate);
        // Real time, in ms; the old node's local clock reads `sent_ms` at real `sent_ms`.
        let expiry = sent_ms + delay_ms + TTL.as_millis() as u64;
        let won = expiry + after_ms;
        let local = |real: u64| at(sent_ms + (real - sent_ms) * rate / 1000);

        let mut old = Leadership::new(timing);
        old.won(7, 10, at(0), at(0));
        old.applied_through(10);
        old.renewed(at(sent_ms));
        for real in [won, won + 1, won + TTL.as_millis() as u64, won + 60_000] {
            prop_assert!(
                !old.may_decide(local(real)),
                "the old leader decides at real {} ms (its clock {:?}), the new one won at {} ms",
                real, local(real), won
            );
        }

        // The new leader, caught up, decides from its win: the old one no longer does.
        let mut new = Leadership::new(timing);
        new.won(8, 20, at(won), at(won));
        new.applied_through(20);
        prop_assert!(new.may_decide(at(won)));
    }
}

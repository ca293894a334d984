//! Random sequences of checks, outcomes, operator actions and time steps, run against the
//! breaker and against a deliberately naive reference model written straight from the SPEC
//! table; after every step the two must agree and the invariants must hold.

use std::collections::HashSet;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum Op {
    Check,
    /// Report on the permit issued `back` checks ago (or without a permit when none).
    Report {
        back: Option<usize>,
        outcome: Outcome,
    },
    Reset,
    Trip,
    Advance(Duration),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Check),
        4 => (proptest::option::weighted(0.8, 0usize..6), prop_oneof![Just(Outcome::Success), Just(Outcome::Failure)])
            .prop_map(|(back, outcome)| Op::Report { back, outcome }),
        1 => Just(Op::Reset),
        1 => Just(Op::Trip),
        3 => (0u64..60).prop_map(|halves| Op::Advance(Duration::from_millis(halves * 500))),
        1 => Just(Op::Tick),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (1u32..5, 1u64..20, 1u64..30, 1u32..4, 1u64..10).prop_map(
        |(threshold, window, open, tries, lease)| Settings {
            failure_threshold: threshold,
            failure_window: Duration::from_secs(window),
            open_timeout: Duration::from_secs(open),
            half_open_max_tries: tries,
            half_open_timeout: Duration::from_secs(lease),
            ..Settings::default()
        },
    )
}

/// The SPEC table, written as plainly as possible: every failure time kept, every reported
/// permit remembered forever.
#[derive(Debug)]
struct Model {
    state: State,
    tripped: bool,
    generation: u64,
    next_sequence: u64,
    closed_failures: Vec<Timestamp>,
    opened_at: Timestamp,
    probes: Vec<(u64, Timestamp)>,
    successes: u32,
    reported: HashSet<(u64, u64)>,
}

impl Model {
    fn new() -> Self {
        Model {
            state: State::Closed,
            tripped: false,
            generation: 0,
            next_sequence: 0,
            closed_failures: Vec::new(),
            opened_at: Timestamp::ZERO,
            probes: Vec::new(),
            successes: 0,
            reported: HashSet::new(),
        }
    }

    fn enter(&mut self, state: State, now: Timestamp) {
        self.state = state;
        self.generation += 1;
        self.next_sequence = 0;
        self.probes.clear();
        self.successes = 0;
        if state == State::Open {
            self.opened_at = now;
        }
        if state == State::Closed {
            self.closed_failures.clear();
            self.tripped = false;
        }
    }

    fn time_passes(&mut self, s: &Settings, now: Timestamp) {
        if self.state == State::Open
            && !self.tripped
            && now >= self.opened_at.saturating_add(s.open_timeout)
        {
            self.enter(State::HalfOpen, now);
        } else if self.state == State::HalfOpen
            && self.probes.iter().any(|&(_, expiry)| expiry <= now)
        {
            self.enter(State::Open, now);
        }
    }

    fn check(&mut self, s: &Settings, now: Timestamp) -> Option<Permit> {
        self.time_passes(s, now);
        let allowed = match self.state {
            State::Closed => true,
            State::Open => false,
            State::HalfOpen => self.probes.len() < s.half_open_max_tries as usize,
        };
        allowed.then(|| {
            let permit = Permit {
                generation: self.generation,
                sequence: self.next_sequence,
            };
            self.next_sequence += 1;
            if self.state == State::HalfOpen {
                self.probes
                    .push((permit.sequence, now.saturating_add(s.half_open_timeout)));
            }
            permit
        })
    }

    fn record(
        &mut self,
        s: &Settings,
        permit: Option<Permit>,
        outcome: Outcome,
        now: Timestamp,
    ) -> Disposition {
        self.time_passes(s, now);
        if let Some(p) = permit {
            if p.generation != self.generation {
                return Disposition::Stale;
            }
            if self.reported.contains(&(p.generation, p.sequence)) {
                return Disposition::Duplicate;
            }
        }
        // The permit whose outcome this is, once counted: remembered so that it counts once.
        let mut counted = None;
        match self.state {
            State::Open => return Disposition::Ignored,
            State::Closed if outcome == Outcome::Failure => {
                counted = permit;
                self.closed_failures.push(now);
                let in_window = self
                    .closed_failures
                    .iter()
                    .filter(|&&t| now.saturating_duration_since(t) < s.failure_window)
                    .count();
                if in_window >= s.failure_threshold as usize {
                    self.enter(State::Open, now);
                }
            }
            State::Closed => {}
            State::HalfOpen => {
                let index = match permit {
                    Some(p) => self.probes.iter().position(|&(seq, _)| seq == p.sequence),
                    None => (!self.probes.is_empty()).then_some(0),
                };
                match (index, outcome) {
                    (None, Outcome::Success) => return Disposition::Ignored,
                    (None, Outcome::Failure) if permit.is_some() => return Disposition::Ignored,
                    (_, Outcome::Failure) => self.enter(State::Open, now),
                    (Some(i), Outcome::Success) => {
                        let (sequence, _) = self.probes.remove(i);
                        counted = Some(Permit {
                            generation: self.generation,
                            sequence,
                        });
                        self.successes += 1;
                        if self.successes >= s.half_open_max_tries {
                            self.enter(State::Closed, now);
                        }
                    }
                }
            }
        }
        if let Some(p) = counted {
            self.reported.insert((p.generation, p.sequence));
        }
        Disposition::Recorded
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_agrees_with_the_model_and_keeps_its_invariants(
        s in settings(),
        ops in proptest::collection::vec(op(), 1..30),
    ) {
        let mut breaker = Breaker::new();
        let mut model = Model::new();
        let mut now = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);
        let mut permits: Vec<Permit> = Vec::new();
        let mut opened_at: Option<Timestamp> = None;

        for op in ops {
            let before = breaker.clone();
            let transitions = match op {
                Op::Check => {
                    let (decision, transitions) = breaker.check(&s, now);
                    let expected = model.check(&s, now);
                    match decision {
                        Decision::Allowed { permit, .. } => {
                            prop_assert_eq!(Some(permit), expected);
                            permits.push(permit);
                        }
                        Decision::Denied(_) | Decision::Passed(_) => {
                            prop_assert_eq!(None, expected)
                        }
                    }
                    transitions
                }
                Op::Report { back, outcome } => {
                    let permit = back.and_then(|b| permits.len().checked_sub(b + 1)).map(|i| permits[i]);
                    let mut ticked = breaker.clone();
                    ticked.tick(&s, now);
                    let (disposition, transitions) = breaker.record(&s, permit, outcome, now);
                    prop_assert_eq!(disposition, model.record(&s, permit, outcome, now));
                    if matches!(disposition, Disposition::Stale | Disposition::Duplicate) {
                        prop_assert_eq!(&breaker, &ticked, "a stale or duplicate outcome changed the breaker");
                    }
                    transitions
                }
                Op::Reset => {
                    model.enter(State::Closed, now);
                    let transition = breaker.reset(&s, now);
                    prop_assert_eq!(transition.cause, Cause::OperatorReset);
                    opened_at = None;
                    Transitions::default()
                }
                Op::Trip => {
                    model.tripped = true;
                    model.enter(State::Open, now);
                    let transition = breaker.trip(&s, now);
                    prop_assert_eq!(transition.to, State::Open);
                    opened_at = Some(now);
                    Transitions::default()
                }
                Op::Advance(step) => {
                    now = now.saturating_add(step);
                    Transitions::default()
                }
                Op::Tick => {
                    model.time_passes(&s, now);
                    breaker.tick(&s, now)
                }
            };

            for t in transitions.iter() {
                if t.from == State::Open {
                    prop_assert!(!before.is_tripped(), "a tripped breaker recovered by itself: {:?}", t);
                    let since = opened_at.map(|o| t.at.saturating_duration_since(o));
                    prop_assert!(since.is_some_and(|d| d >= s.open_timeout), "left OPEN after {:?}", since);
                }
                if t.to == State::Open {
                    opened_at = Some(t.at);
                }
            }
            prop_assert_eq!(breaker.state(), model.state);
            prop_assert_eq!(breaker.generation(), model.generation);
            prop_assert_eq!(breaker.is_tripped(), model.tripped);
            prop_assert!(breaker.probes().len() <= s.half_open_max_tries as usize);
            prop_assert_eq!(breaker.probes().len(), model.probes.len());
            if breaker.state() == State::Closed {
                for failure in breaker.failure_times(&s, now) {
                    prop_assert!(now.saturating_duration_since(failure) < s.failure_window);
                }
                let expected = model.closed_failures.iter().filter(|&&t| now.saturating_duration_since(t) < s.failure_window).count();
                prop_assert_eq!(breaker.failure_count(&s, now) as usize, expected);
            }
            if breaker.is_tripped() {
                prop_assert_eq!(breaker.next_deadline(), None);
            }
        }
    }
}

//! The numbers and names the store writes for the core's enums: fixed forever, since rows
//! written by earlier releases must still read back the same.

use crate::core::{Cause, FailureKind, Mode, State, Timestamp};

pub fn state_code(state: State) -> u32 {
    match state {
        State::Closed => 1,
        State::Open => 2,
        State::HalfOpen => 3,
    }
}

pub fn state_from_code(code: u32) -> Option<State> {
    match code {
        1 => Some(State::Closed),
        2 => Some(State::Open),
        3 => Some(State::HalfOpen),
        _ => None,
    }
}

pub fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "CLOSED",
        State::Open => "OPEN",
        State::HalfOpen => "HALF_OPEN",
    }
}

pub fn state_from_name(name: &str) -> Option<State> {
    match name {
        "CLOSED" => Some(State::Closed),
        "OPEN" => Some(State::Open),
        "HALF_OPEN" => Some(State::HalfOpen),
        _ => None,
    }
}

pub(super) fn cause_code(cause: Cause) -> u32 {
    match cause {
        Cause::FailureThresholdReached => 1,
        Cause::OpenTimeoutElapsed => 2,
        Cause::ProbesSucceeded => 3,
        Cause::ProbeFailed => 4,
        Cause::ProbeExpired => 5,
        Cause::OperatorReset => 6,
        Cause::OperatorTrip => 7,
        Cause::FailureKindTrip => 8,
        Cause::FailureRateReached => 9,
        Cause::SlowCallRateReached => 10,
        Cause::TripExpired => 11,
        Cause::Halted => 12,
        Cause::Resumed => 13,
    }
}

pub(super) fn cause_from_code(code: u32) -> Option<Cause> {
    Some(match code {
        1 => Cause::FailureThresholdReached,
        2 => Cause::OpenTimeoutElapsed,
        3 => Cause::ProbesSucceeded,
        4 => Cause::ProbeFailed,
        5 => Cause::ProbeExpired,
        6 => Cause::OperatorReset,
        7 => Cause::OperatorTrip,
        8 => Cause::FailureKindTrip,
        9 => Cause::FailureRateReached,
        10 => Cause::SlowCallRateReached,
        11 => Cause::TripExpired,
        12 => Cause::Halted,
        13 => Cause::Resumed,
        _ => return None,
    })
}

pub(super) fn kind_code(kind: FailureKind) -> u32 {
    FailureKind::ALL
        .iter()
        .position(|k| *k == kind)
        .map_or(0, |i| i as u32)
}

pub(super) fn kind_from_code(code: u32) -> FailureKind {
    FailureKind::ALL
        .get(code as usize)
        .copied()
        .unwrap_or(FailureKind::Other)
}

pub(super) fn mode_code(mode: Mode) -> u32 {
    match mode {
        Mode::Enforce => 1,
        Mode::Shadow => 2,
        Mode::Disabled => 3,
    }
}

pub(super) fn mode_from_code(code: u32) -> Option<Mode> {
    match code {
        1 => Some(Mode::Enforce),
        2 => Some(Mode::Shadow),
        3 => Some(Mode::Disabled),
        _ => None,
    }
}

pub(super) fn at(nanos: u64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

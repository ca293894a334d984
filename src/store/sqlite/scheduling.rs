//! How the operating system schedules the store's writer thread, which changes between waiting
//! for changes and committing them (Linux; elsewhere the writer keeps the default).
//!
//! - **Waiting**, it is `SCHED_BATCH` work at nice 0: the same share of the CPU as any thread,
//!   but a change submitted wakes it without preempting the runtime thread that is handling
//!   calls. It runs when that thread waits or its time slice ends, and whatever was submitted
//!   meanwhile joins the same commit, so a busy server makes fewer, larger commits.
//! - **Committing**, it is a normal thread at nice [`COMMITTING_NICE`]: when a sync ends, the
//!   callers of that commit and the changes queued behind it all wait on the writer, so it
//!   preempts request handling at once to answer them and write the next commit.
//!
//! The writer is raised only while it has changes in hand (a busy server keeps it raised from
//! one commit to the next) and set back before it waits, and before it folds the breaker log,
//! which takes milliseconds that calls needing no commit should not wait behind. Raising a thread's priority takes
//! `CAP_SYS_NICE`, or an `RLIMIT_NICE` of at least 30 (`ulimit -e`, systemd's `LimitNICE=-10`,
//! Docker's `--ulimit nice=30`). Without either, the writer stays `SCHED_BATCH` work throughout,
//! which costs throughput under load, not correctness.
//!
//! Measured with the server on one core and 64 callers (`outcome_durability --split`): as batch
//! work, 12.8k durable outcomes/s against 11.3k as a normal thread (2026-11-27, on a slower
//! machine); raised while committing, 68.9-71.3k against 63.6-65.5k as batch work throughout
//! (2026-11-28, three alternating pairs).

/// The writer's nice value while it commits.
pub(super) const COMMITTING_NICE: i32 = -10;

pub(super) struct Scheduling {
    committing: bool,
    /// Cleared at the first refusal to raise the writer, which then stays `SCHED_BATCH` work.
    may_raise: bool,
}

impl Scheduling {
    /// Puts the calling thread (the writer) in its waiting policy.
    pub(super) fn start() -> Self {
        let may_raise = match set(Policy::Batch) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "the store's writer keeps the default scheduling policy");
                false
            }
        };
        Scheduling {
            committing: false,
            may_raise,
        }
    }

    /// The writer has changes to commit.
    pub(super) fn committing(&mut self) {
        if self.committing || !self.may_raise {
            return;
        }
        match set(Policy::Committing) {
            Ok(()) => self.committing = true,
            Err(error) => {
                self.may_raise = false;
                let _ = set(Policy::Batch);
                tracing::info!(
                    %error,
                    nice = COMMITTING_NICE,
                    "the store's writer cannot raise its priority while it commits (it needs \
                     CAP_SYS_NICE or an RLIMIT_NICE of at least 30); durable calls under load \
                     wait longer for their commit"
                );
            }
        }
    }

    /// The writer is about to wait for changes.
    pub(super) fn waiting(&mut self) {
        if self.committing {
            self.committing = false;
            // Lowering a thread's priority is always allowed.
            let _ = set(Policy::Batch);
        }
    }
}

enum Policy {
    Batch,
    Committing,
}

#[cfg(target_os = "linux")]
fn set(policy: Policy) -> std::io::Result<()> {
    let (class, nice) = match policy {
        Policy::Batch => (libc::SCHED_BATCH, 0),
        Policy::Committing => (libc::SCHED_OTHER, COMMITTING_NICE),
    };
    let param = libc::sched_param { sched_priority: 0 };
    // Raising renices first and lowering changes the policy first, so on the way the thread is
    // batch work at the raised nice, never a normal thread at nice 0; and a refused renice
    // leaves it batch work.
    let renice = || {
        // SAFETY: `setpriority` takes plain integers; on Linux, `PRIO_PROCESS` with 0 applies to
        // the calling thread alone.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let reschedule = || {
        // SAFETY: `sched_setscheduler` reads `param`, which outlives the call, and changes only
        // the calling thread's policy (pid 0).
        if unsafe { libc::sched_setscheduler(0, class, &param) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match policy {
        Policy::Batch => reschedule().and_then(|()| renice()),
        Policy::Committing => renice().and_then(|()| reschedule()),
    }
}

#[cfg(not(target_os = "linux"))]
fn set(_: Policy) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "scheduling policies are set on Linux only",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current() -> (i32, i32) {
        // SAFETY: both take plain integers and read the calling thread's settings.
        unsafe {
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, 0),
            )
        }
    }

    #[test]
    fn the_writer_waits_as_batch_work_and_commits_raised_when_it_may() {
        std::thread::spawn(|| {
            let mut scheduling = Scheduling::start();
            assert_eq!(current(), (libc::SCHED_BATCH, 0));
            scheduling.committing();
            if scheduling.may_raise {
                assert_eq!(current(), (libc::SCHED_OTHER, COMMITTING_NICE));
            } else {
                // Refused (no CAP_SYS_NICE, RLIMIT_NICE too low): still batch work.
                assert_eq!(current(), (libc::SCHED_BATCH, 0));
            }
            scheduling.waiting();
            assert_eq!(current(), (libc::SCHED_BATCH, 0));
        })
        .join()
        .expect("the thread's assertions");
    }
}

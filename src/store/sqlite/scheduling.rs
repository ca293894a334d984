//! The writer thread's scheduling policy on Linux: `SCHED_BATCH` while it waits for work, the
//! default policy while it works.
//!
//! Waiting as batch work, the writer's wake-up when a change is submitted does not preempt a
//! runtime thread that is handling calls, so the changes submitted meanwhile join the same
//! commit. Working as batch work too, it would also wait for the runtime after each sleep
//! inside a commit (the data write, the cache flush), so it commits at the default policy.
//! Both measured in docs/benchmarks.md ("The writer's scheduling policy"). Where the policy
//! cannot be changed, the writer keeps the default throughout.

#[derive(Default)]
pub(super) struct Scheduling {
    /// The writer is batch work now.
    batch: bool,
    /// Setting the policy failed once: it is not tried again.
    fixed: bool,
}

impl Scheduling {
    pub(super) fn wait_as_batch_work(&mut self) {
        if !self.batch {
            self.batch = self.set(true);
        }
    }

    pub(super) fn work_as_normal(&mut self) {
        if self.batch {
            self.batch = !self.set(false);
        }
    }

    /// Sets the calling thread's policy; true if it was set.
    fn set(&mut self, batch: bool) -> bool {
        if self.fixed {
            return false;
        }
        #[cfg(target_os = "linux")]
        {
            let policy = if batch {
                libc::SCHED_BATCH
            } else {
                libc::SCHED_OTHER
            };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `sched_setscheduler` reads `param`, which outlives the call, and changes
            // only the calling thread's policy (pid 0).
            if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
                return true;
            }
            tracing::debug!(error = %std::io::Error::last_os_error(), "the store's writer keeps its scheduling policy");
        }
        let _ = batch;
        self.fixed = true;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_waits_as_batch_work_and_works_at_the_default_policy() {
        let policy_now = || unsafe { libc::sched_getscheduler(0) };
        std::thread::spawn(move || {
            let mut policy = Scheduling::default();
            assert_eq!(policy_now(), libc::SCHED_OTHER);
            policy.wait_as_batch_work();
            assert_eq!(policy_now(), libc::SCHED_BATCH);
            policy.wait_as_batch_work();
            assert_eq!(policy_now(), libc::SCHED_BATCH);
            policy.work_as_normal();
            assert_eq!(policy_now(), libc::SCHED_OTHER);
            assert!(!policy.fixed);
        })
        .join()
        .expect("the policy changes");
    }
}

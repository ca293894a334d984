//! Replication: riskgate as a small cluster of nodes on etcd, one leader deciding for every
//! account and hot standbys following it.
//!
//! Owns each node's leadership: [`leadership`] is the pure state machine of a node's role and of
//! the deadlines that keep it safe (the self-fence before its lease can expire, the wait before
//! a new leader serves), tested row by row like the breaker core. It must not speak gRPC, and
//! it reads no clock: instants are passed in.

pub mod leadership;

pub use leadership::{Leadership, LeaseTiming, Refusal, Role};

//! Replication: riskgate as a small cluster of nodes on etcd, one leader deciding for every
//! account and hot standbys following it (docs/cluster.md).
//!
//! Owns each node's leadership and its mirror. [`leadership`] is the pure state machine of a
//! node's role and of the deadlines that keep it safe (the self-fence before its lease can
//! expire, the wait before a new leader serves), tested row by row like the breaker core; it
//! reads no clock. [`keys`] is what lives in etcd and how it is encoded. With the `cluster`
//! feature, the etcd adapter: the fenced group-commit store and the node's tasks. It must not
//! speak gRPC beyond refusing calls that belong on the leader ([`routing`]).

pub mod keys;
pub mod leadership;
pub mod routing;

#[cfg(feature = "cluster")]
mod etcd;
#[cfg(feature = "cluster")]
mod node;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use leadership::{Leadership, LeaseTiming, Refusal, Role};
#[cfg(feature = "cluster")]
pub use node::Node;
pub use routing::LeaderRouting;

/// Where calls that change breakers go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node leads (it may still be catching up, or fenced: its registry says why).
    Here,
    /// Another node leads.
    Leader { node_id: String, address: String },
    /// No leader is known.
    Unknown,
}

/// One node as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    pub node_id: String,
    pub address: String,
    pub leader: bool,
    pub applied_revision: i64,
    /// etcd's revision minus the node's applied revision, as it last reported.
    pub lag_revisions: i64,
    /// How long ago it last reported.
    pub reported_ago: Duration,
    /// Time left on its lease, as etcd counts it (`None`: no lease).
    pub lease_left: Option<Duration>,
}

/// The cluster, as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: String,
    pub role: Role,
    pub leader_id: String,
    pub leader_address: String,
    pub epoch: u64,
    pub etcd_revision: i64,
    pub members: Vec<MemberStatus>,
}

/// A node's place in its cluster, as the server and the api need it.
pub trait Membership: Send + Sync + 'static {
    fn route(&self) -> Route;
    /// Whether this node's mirror has heard from etcd lately (it answers reads truthfully).
    fn mirror_current(&self) -> bool;
    fn node_id(&self) -> &str;
    fn role(&self) -> Role;
    fn status(&self) -> Pin<Box<dyn Future<Output = Result<ClusterStatus, String>> + Send + '_>>;
    /// Runs the node (lease, campaign, mirror) over `registry` until `stopped` resolves.
    fn run(
        self: std::sync::Arc<Self>,
        registry: std::sync::Arc<crate::registry::Registry>,
        stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
    /// Leaves the cluster at once (gives up the lease), once the store is closed.
    fn resign(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

//! For cluster tests: a private etcd cluster on loopback ports, TCP proxies the test can cut
//! (to take a node off etcd while bots still reach it), and riskgate nodes run from the built
//! binary.
//!
//! Without etcd installed these tests say loudly that they were skipped and how to install it;
//! with `RISKGATE_REQUIRE_ETCD=1` (set by `.ci/run`) a missing etcd fails them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::{GetClusterRequest, GetClusterResponse, NodeRole};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::process::{free_port, Running};

/// The etcd binary, or `None` (the test is skipped, loudly) when it is not installed.
pub fn etcd_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let required = std::env::var("RISKGATE_REQUIRE_ETCD").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "etcd is not installed, and RISKGATE_REQUIRE_ETCD=1 says these tests must run"
        );
        // Straight to the terminal: the test harness captures eprintln!, which would hide it.
        let _ = writeln!(
            std::io::stderr(),
            "\n==================== SKIPPED ====================\n\
             cluster test skipped: etcd is not installed.\n\
             Install it (Debian: sudo apt-get install etcd-server etcd-client) and run\n\
             cargo test --features cluster --test cluster\n\
             ================================================="
        );
    }
    found
}

/// One etcd member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Running>,
}

/// A private etcd cluster on loopback.
pub struct Etcd {
    binary: PathBuf,
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

impl Etcd {
    /// Starts `size` members and waits until they have a leader. `None`: etcd is not installed.
    pub async fn start(size: usize) -> Option<Etcd> {
        let binary = etcd_binary()?;
        let dir = tempfile::tempdir().expect("etcd dir");
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                process: None,
            })
            .collect();
        let mut etcd = Etcd {
            binary,
            dir,
            members,
        };
        for i in 0..size {
            etcd.launch(i);
        }
        etcd.wait_for_leader().await;
        Some(etcd)
    }

    fn launch(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let member = &self.members[i];
        let data = self.dir.path().join(&member.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", member.name)))
            .expect("etcd log");
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "riskgate-test"])
            // Loopback: elect quickly, as a LAN deployment would be tuned.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].process = Some(Running(child));
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        self.launch(i);
    }

    /// The index of the member that leads etcd now.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for (i, member) in self.members.iter().enumerate() {
                if member.process.is_none() {
                    continue;
                }
                let url = format!("http://127.0.0.1:{}", member.client_port);
                let status = async {
                    let mut client = etcd_client::Client::connect([url], None).await.ok()?;
                    client.status().await.ok()
                };
                if let Ok(Some(status)) = tokio::time::timeout(Duration::from_secs(1), status).await
                {
                    if status.header().map(|h| h.member_id()) == Some(status.leader()) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "etcd elected no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_leader(&self) {
        self.leader().await;
    }

    /// The members' logs, for a failing test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let path = self.dir.path().join(format!("{}.log", member.name));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.push_str(&format!("--- etcd {} (last lines)\n", member.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// A TCP proxy to one port that the test can cut and heal. Cut, it forwards nothing and
/// answers nothing, but closes nothing either: a silent partition, as a dropped link or a
/// firewall makes, which only timeouts can tell from a slow peer.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

/// Copies `from` to `to` while the proxy is not cut; holds still while it is.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let read =
            match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buffer)).await {
                Err(_) => continue,
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            };
        // Read just as the cut came: held back until the heal.
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let accept = tokio::spawn({
            let cut = cut.clone();
            async move {
                let live: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let cut = cut.clone();
                    let task = tokio::spawn(async move {
                        while cut.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                            return;
                        };
                        let _ = outbound.set_nodelay(true);
                        let _ = inbound.set_nodelay(true);
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::join!(
                            forward(in_read, out_write, cut.clone()),
                            forward(out_read, in_write, cut)
                        );
                    });
                    let mut live = live.lock().expect("proxy list");
                    live.retain(|t| !t.is_finished());
                    live.push(task);
                }
            }
        });
        Proxy { port, cut, accept }
    }

    /// Stops forwarding, silently.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One riskgate node, run from the built binary, reaching etcd through proxies of its own.
pub struct Node {
    pub id: String,
    pub addr: String,
    /// The node's web console, http://host:port.
    pub console: String,
    config: PathBuf,
    log: PathBuf,
    proxies: Vec<Proxy>,
    process: Option<Running>,
    channel: Channel,
}

/// How a test's nodes are set up.
pub struct NodeSettings {
    pub lease_secs: u64,
    /// More TOML for every node (breaker settings, say).
    pub extra: String,
}

impl Node {
    pub async fn start(dir: &Path, id: &str, etcd: &Etcd, settings: &NodeSettings) -> Node {
        let mut proxies = Vec::new();
        for port in etcd.client_ports() {
            proxies.push(Proxy::start(port).await);
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let console = format!("127.0.0.1:{}", free_port());
        let endpoints: Vec<String> = proxies
            .iter()
            .map(|p| format!("\"http://127.0.0.1:{}\"", p.port))
            .collect();
        let config = dir.join(format!("{id}.toml"));
        let mut file = std::fs::File::create(&config).expect("node config");
        write!(
            file,
            "[server]\nlisten = \"{addr}\"\nshutdown_grace_secs = 1.0\n\
             [store]\nkind = \"memory\"\n\
             [console]\nlisten = \"{console}\"\n\
             [cluster]\netcd_endpoints = [{}]\nnode_id = \"{id}\"\nadvertise = \"{addr}\"\n\
             lease_secs = {}\nkey_prefix = \"/riskgate-test\"\n\
             {}\n",
            endpoints.join(", "),
            settings.lease_secs,
            settings.extra
        )
        .expect("write node config");
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(3))
            .connect_lazy();
        let mut node = Node {
            id: id.to_owned(),
            addr,
            console: format!("http://{console}"),
            config,
            log: dir.join(format!("{id}.log")),
            proxies,
            process: None,
            channel,
        };
        node.launch();
        node.wait_answering().await;
        node
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let child = super::process::riskgate()
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start riskgate");
        self.process = Some(Running(child));
    }

    /// Waits until the node answers GetCluster (it has loaded the cluster's state).
    pub async fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.cluster().await.is_none() {
            assert!(
                Instant::now() < deadline,
                "node {} never answered; its log:\n{}",
                self.id,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.id())
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    pub fn signal(&self, name: &str) {
        if let Some(process) = &self.process {
            super::process::signal(process, name);
        }
    }

    pub async fn restart(&mut self) {
        self.kill();
        self.launch();
        self.wait_answering().await;
    }

    /// Cuts the node off from etcd (bots still reach it).
    pub fn cut_off(&self) {
        for proxy in &self.proxies {
            proxy.cut();
        }
    }

    pub fn reconnect(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }

    pub fn gate(&self) -> GateServiceClient<Channel> {
        GateServiceClient::new(self.channel.clone())
    }

    pub fn monitor(&self) -> MonitorServiceClient<Channel> {
        MonitorServiceClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub async fn cluster(&self) -> Option<GetClusterResponse> {
        tokio::time::timeout(
            Duration::from_secs(1),
            self.monitor().get_cluster(GetClusterRequest {}),
        )
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
    }

    pub async fn role(&self) -> Option<NodeRole> {
        self.cluster()
            .await
            .and_then(|c| NodeRole::try_from(c.role).ok())
    }

    /// The health status of `service` ("" for the whole server): true when SERVING.
    pub async fn serving(&self, service: &str) -> bool {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let answer = tokio::time::timeout(
            Duration::from_secs(1),
            HealthClient::new(self.channel.clone()).check(HealthCheckRequest {
                service: service.into(),
            }),
        )
        .await;
        matches!(answer, Ok(Ok(r)) if r.get_ref().status == 1)
    }

    pub fn log_tail(&self) -> String {
        tail_of(&self.log)
    }

    /// Where the node logs, for a test that must show it after the node is out of reach.
    pub fn log_path(&self) -> PathBuf {
        self.log.clone()
    }
}

/// The last 40 lines of a node's log file, leaving out the audit lines of operator actions.
pub fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Without the audit lines of the test's own operator actions, which a retried action
    // repeats until they are all the tail holds.
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.contains("riskgate::api::admin: operator"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits until one of `nodes` says it is the leader and its GateService is SERVING; returns its
/// index.
pub async fn wait_for_leader(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if node.is_running()
                && node.role().await == Some(NodeRole::Leader)
                && node.serving("riskgate.v1.GateService").await
            {
                return i;
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- {}\n{}", n.id, n.log_tail()))
                .collect();
            panic!("no leader serving within 30 s:\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

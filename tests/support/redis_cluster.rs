//! A real Redis Cluster for tests: three masters (no replicas) started from the `redis-server`
//! binary on free 127.0.0.1 ports, each node with its own directory under a temporary one, the
//! 16,384 slots spread over them by `redis-cli --cluster create`. Ready once every node reports
//! `cluster_state:ok`; the processes are killed and the directory removed on drop.

use redis::aio::MultiplexedConnection;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const NODES: usize = 3;

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = PathBuf::from(crate::scratch_dir("redis-cluster"));
        let mut cluster = RedisCluster { ports: Vec::new(), children: Vec::new(), dir };
        for i in 0..NODES {
            let (port, child) = cluster.start_node(i).await?;
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| anyhow::anyhow!("redis-cli (Debian package redis-tools): {e}"))?;
        anyhow::ensure!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_until_ok(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Starts node `i` on a free port whose bus port (+10000) is free too; tries other ports if
    /// another process takes the one chosen first.
    async fn start_node(&self, i: usize) -> anyhow::Result<(u16, Child)> {
        for _ in 0..10 {
            let port = free_port_pair()?;
            let dir = self.dir.join(format!("node-{i}"));
            std::fs::create_dir_all(&dir)?;
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| anyhow::anyhow!("redis-server: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    break; // the port was taken meanwhile: another one
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Ok((port, child));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill().await;
        }
        anyhow::bail!("could not start cluster node {i}")
    }

    async fn wait_until_ok(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut ok = true;
            for port in &self.ports {
                let mut conn = self.node(*port).await?;
                last = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await?;
                ok &= last.contains("cluster_state:ok")
                    && last.contains("cluster_slots_ok:16384")
                    && last.contains(&format!("cluster_known_nodes:{NODES}"));
            }
            if ok {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the cluster did not become ready: {last}")
    }

    /// `QUOTA_REDIS_URL` for the service: the cluster scheme with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// A plain connection to one node (by port).
    pub async fn node(&self, port: u16) -> anyhow::Result<MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// Every key matching `pattern` on every node (`SCAN` on each), with the node's port.
    pub async fn scan(&self, pattern: &str) -> anyhow::Result<Vec<(u16, String)>> {
        let mut found = Vec::new();
        for port in &self.ports {
            let mut conn = self.node(*port).await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await?;
                found.extend(keys.into_iter().map(|k| (*port, k)));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(found)
    }

    /// `CLUSTER KEYSLOT key`.
    pub async fn keyslot(&self, key: &str) -> anyhow::Result<i64> {
        let mut conn = self.node(self.ports[0]).await?;
        Ok(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await?)
    }

    /// Runs `cmd` on every node (e.g. `SCRIPT FLUSH`).
    pub async fn on_every_node(&self, cmd: &redis::Cmd) -> anyhow::Result<()> {
        for port in &self.ports {
            let mut conn = self.node(*port).await?;
            cmd.query_async::<()>(&mut conn).await?;
        }
        Ok(())
    }
}

/// A port that is free now and whose cluster bus port (port + 10000) is free too.
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a cluster node")
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

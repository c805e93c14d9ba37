//! A `nats-server -js` run as a child process on 127.0.0.1: for `jarvis up`'s local stack and for tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a local nats-server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The binary is not installed.
    #[error("nats-server not found (looked at $JARVIS_NATS_SERVER, /usr/sbin/nats-server and PATH): install it with `apt-get install nats-server`")]
    Missing,
    /// It started but did not come up.
    #[error("nats-server did not come up within {seconds} s; see its log {log}")]
    Timeout {
        /// How long we waited.
        seconds: u64,
        /// Its log file.
        log: String,
    },
    /// The file system refused.
    #[error("nats-server at {dir}: {source}")]
    Io {
        /// The data directory.
        dir: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Where `nats-server` is: `$JARVIS_NATS_SERVER`, else `/usr/sbin/nats-server`, else `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("JARVIS_NATS_SERVER") {
        return Some(p.into());
    }
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.exists() {
        return Some(debian.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.exists())
    })
}

/// One node of a JetStream cluster on 127.0.0.1: its name, client port, cluster (route) port, and the
/// route ports of every node (its own included, which nats-server ignores).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The server's name (unique in the cluster), e.g. `n1`.
    pub name: String,
    /// The cluster's name.
    pub cluster: String,
    /// Client port.
    pub port: u16,
    /// Route port.
    pub cluster_port: u16,
    /// Route ports of all nodes.
    pub routes: Vec<u16>,
}

/// A nats-server with JetStream, data in a directory of ours, killed on drop.
pub struct NatsProcess {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    cluster: Option<ClusterNode>,
}

impl NatsProcess {
    /// Starts a server on `port` (a free one chosen by the server when `None`) with its JetStream store,
    /// log and ports file under `dir`, and waits until it accepts connections.
    ///
    /// # Errors
    /// [`LaunchError`] when the binary is missing, the directory is unusable, or it does not come up in 10 s.
    pub fn start(dir: &Path, port: Option<u16>) -> Result<Self, LaunchError> {
        let mut server = Self {
            child: None,
            dir: dir.to_path_buf(),
            port: 0,
            cluster: None,
        };
        server.spawn(port)?;
        Ok(server)
    }

    /// Starts one node of a JetStream cluster (see [`ClusterNode`]) with its store, log and configuration
    /// under `dir`, and waits until it accepts client connections (JetStream becomes available once a quorum
    /// of the cluster is up).
    ///
    /// # Errors
    /// As [`NatsProcess::start`].
    pub fn start_clustered(dir: &Path, node: ClusterNode) -> Result<Self, LaunchError> {
        let mut server = Self {
            child: None,
            dir: dir.to_path_buf(),
            port: 0,
            cluster: Some(node.clone()),
        };
        server.spawn(Some(node.port))?;
        Ok(server)
    }

    /// The configuration file of a cluster node.
    fn write_cluster_config(&self, node: &ClusterNode) -> std::io::Result<PathBuf> {
        let routes: Vec<String> = node
            .routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let store = self.dir.join("jetstream");
        let text = format!(
            "server_name: \"{name}\"\nlisten: \"127.0.0.1:{port}\"\njetstream {{\n  store_dir: \"{store}\"\n}}\ncluster {{\n  name: \"{cluster}\"\n  listen: \"127.0.0.1:{cport}\"\n  routes: [{routes}]\n}}\n",
            name = node.name,
            port = node.port,
            store = store.display(),
            cluster = node.cluster,
            cport = node.cluster_port,
            routes = routes.join(", "),
        );
        let path = self.dir.join("nats-server.conf");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn spawn(&mut self, port: Option<u16>) -> Result<(), LaunchError> {
        let io = |source| LaunchError::Io {
            dir: self.dir.display().to_string(),
            source,
        };
        let ports_dir = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).map_err(io)?;
        let log = self.dir.join("nats-server.log");
        let port_arg = port.map_or("-1".to_string(), |p| p.to_string());
        let mut command = Command::new(binary().ok_or(LaunchError::Missing)?);
        match self.cluster.clone() {
            Some(node) => {
                let conf = self.write_cluster_config(&node).map_err(io)?;
                command.arg("-c").arg(conf);
            }
            None => {
                command
                    .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
                    .arg(self.dir.join("jetstream"));
            }
        }
        let child = command
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Ctrl-C in our terminal is ours to handle, then we stop it.
            .process_group(0)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LaunchError::Missing,
                _ => io(e),
            })?;
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        self.child = Some(child);
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        let timed_out = || LaunchError::Timeout {
            seconds: timeout.as_secs(),
            log: log.display().to_string(),
        };
        self.port = loop {
            let port = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|json| {
                    let url = json["nats"][0].as_str()?.to_string();
                    url.rsplit(':').next()?.parse::<u16>().ok()
                });
            if let Some(port) = port {
                break port;
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(timed_out());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                self.kill();
                return Err(timed_out());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port with the same JetStream store.
    ///
    /// # Errors
    /// [`LaunchError`] when it does not come back.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        let port = self.port;
        self.spawn(Some(port))
    }
}

impl NatsProcess {
    /// Stops the server gracefully (SIGTERM lets JetStream flush its store), or kills it after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

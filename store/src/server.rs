//! A private PostgreSQL cluster run as a child process on 127.0.0.1: for `jarvis up`'s local stack and for tests.
//!
//! For a data directory `D`, the cluster lives in `D` and a sibling `D.run/` holds the unix socket (so it never
//! clashes with the machine's cluster in `/var/run/postgresql`) and `postgres.log`, the server's stdout and
//! stderr. PostgreSQL refuses to run as root, so as root every PostgreSQL program runs as the `postgres` OS
//! user (set on the child itself, not through `runuser`, which forks: a SIGKILL would then miss the
//! postmaster), and that user owns `D` and `D.run/`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// `sun_path` holds 107 bytes; the socket is `<dir>/.s.PGSQL.<port>`.
const MAX_SOCKET_PATH: usize = 107;

/// Why a private PostgreSQL could not be started or stopped; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// `initdb` or `postgres` is not installed.
    #[error("PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or PATH: install them with apt-get install postgresql")]
    BinariesNotFound,
    /// Running as root, but there is no `postgres` OS user to run the server as.
    #[error("running as root, and PostgreSQL refuses root, but there is no `postgres` OS user to run it as: install it with apt-get install postgresql (which creates the user), or run as a non-root user")]
    NoPostgresUser,
    /// The `postgres` OS user cannot reach the data directory.
    #[error("the `postgres` OS user cannot traverse {blocked}, on the way to {data_dir}: allow it (chmod o+x {blocked}) or choose a data directory it can reach")]
    Unreachable {
        /// The first directory it cannot enter.
        blocked: String,
        /// The data directory.
        data_dir: String,
    },
    /// The unix socket path would exceed the kernel's limit.
    #[error("the unix socket path {path} is longer than {MAX_SOCKET_PATH} bytes: choose a data directory with a shorter path")]
    SocketPathTooLong {
        /// The socket path.
        path: String,
    },
    /// The data directory holds something other than a cluster.
    #[error("{dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): empty it or choose another data directory")]
    NotACluster {
        /// The data directory.
        dir: String,
    },
    /// `initdb` failed.
    #[error("initdb failed on {dir}:\n{output}")]
    InitDb {
        /// The data directory.
        dir: String,
        /// The end of its output.
        output: String,
    },
    /// Something else listens on the port.
    #[error("port {port} on 127.0.0.1 is taken: stop whatever listens there, or let jarvis pick a free port")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// Another postmaster already runs on this data directory.
    #[error("another postgres already runs on {dir} (see {dir}/postmaster.pid): stop it, or use another data directory")]
    AlreadyRunning {
        /// The data directory.
        dir: String,
    },
    /// The server exited during startup.
    #[error("postgres exited during startup ({status}); full log in {log}, last lines:\n{tail}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The log file.
        log: String,
        /// The last lines it logged.
        tail: String,
    },
    /// The server did not accept connections in time.
    #[error("postgres did not accept connections on 127.0.0.1:{port} within {} s and was killed; full log in {log}, last lines:\n{tail}", START_TIMEOUT.as_secs())]
    Timeout {
        /// The port.
        port: u16,
        /// The log file.
        log: String,
        /// The last lines it logged.
        tail: String,
    },
    /// A clean shutdown failed; the server was killed instead.
    #[error("postgres did not shut down cleanly ({reason}), so it was killed and will run crash recovery at its next start; see {log}")]
    StopFailed {
        /// What went wrong.
        reason: String,
        /// The log file.
        log: String,
    },
    /// The file system or process table refused.
    #[error("{action}: {source}")]
    Io {
        /// What we were doing.
        action: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(action: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LaunchError {
    let action = action.to_string();
    move |source| LaunchError::Io { action, source }
}

/// A PostgreSQL server run as a child process on 127.0.0.1, data in a directory of ours; stopped on drop.
pub struct PostgresProcess {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    run_dir: PathBuf,
    log: PathBuf,
    bindir: PathBuf,
    /// `(uid, gid)` of the `postgres` OS user when we run as root.
    as_user: Option<(u32, u32)>,
}

impl PostgresProcess {
    /// Initialises `data_dir` with `initdb` if it holds no cluster yet (trust auth, superuser `postgres`,
    /// UTF8, C locale), starts `postgres` on `port` (a free one when `None`) listening on 127.0.0.1 only,
    /// and waits up to 30 s until it accepts connections. Creates no database beyond `postgres`.
    ///
    /// # Errors
    /// [`LaunchError`] when the binaries or the `postgres` user are missing, the directory is unusable,
    /// the port is taken, or the server exits or does not come up in time (with the end of its log).
    pub fn start(data_dir: &Path, port: Option<u16>) -> Result<Self, LaunchError> {
        let bindir = find_bindir().ok_or(LaunchError::BinariesNotFound)?;
        let as_user = if id(&["-u"]).as_deref() == Some("0") {
            let uid = id(&["-u", "postgres"]).and_then(|s| s.parse().ok());
            let gid = id(&["-g", "postgres"]).and_then(|s| s.parse().ok());
            Some(uid.zip(gid).ok_or(LaunchError::NoPostgresUser)?)
        } else {
            None
        };
        fs::create_dir_all(data_dir)
            .map_err(io(format!("cannot create {}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(io(format!("cannot resolve {}", data_dir.display())))?;
        let mut run_dir = data_dir.clone().into_os_string();
        run_dir.push(".run");
        let run_dir = PathBuf::from(run_dir);
        let socket = run_dir.join(".s.PGSQL.65535");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            let path = socket.display().to_string();
            return Err(LaunchError::SocketPathTooLong { path });
        }
        let log = run_dir.join("postgres.log");
        for dir in [&data_dir, &run_dir] {
            fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io(format!("cannot chmod 0700 {}", dir.display())))?;
        }
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("cannot open {}", log.display())))?;
        if let Some((uid, gid)) = as_user {
            let chown = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&data_dir)
                .arg(&run_dir)
                .status();
            if !chown.map_err(io("cannot run chown"))?.success() {
                let err = std::io::Error::other("chown exited with an error");
                return Err(io(format!(
                    "cannot give {} to the postgres user",
                    data_dir.display()
                ))(err));
            }
            check_reachable(&data_dir, &run_dir, (uid, gid))?;
        }
        let mut server = Self {
            child: None,
            port: 0,
            data_dir,
            run_dir,
            log,
            bindir,
            as_user,
        };
        if !server.data_dir.join("PG_VERSION").exists() {
            server.initdb()?;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let chosen = match port {
                Some(port) => port,
                None => free_port()?,
            };
            match server.spawn(chosen) {
                Err(LaunchError::PortInUse { .. }) if port.is_none() && attempt < 3 => {}
                Err(e) => return Err(e),
                Ok(()) => return Ok(server),
            }
        }
    }

    /// The TCP port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's log file (`<data_dir>.run/postgres.log`).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fast shutdown (`pg_ctl stop -m fast`: open sessions are cut, then a checkpoint) and waits up to 60 s
    /// for the server to exit. Does nothing when it is not running.
    ///
    /// # Errors
    /// [`LaunchError::StopFailed`] when it could not be stopped cleanly; it is killed then.
    pub fn stop(&mut self) -> Result<(), LaunchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        let pg_ctl = self
            .command("pg_ctl")
            .args(["stop", "-m", "fast", "-W", "-D"])
            .arg(&self.data_dir)
            .output();
        let mut failure = match pg_ctl {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!(
                "pg_ctl stop: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => Some(format!("cannot run pg_ctl: {e}")),
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while failure.is_none() {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() > deadline => {
                    failure = Some(format!("still running after {} s", STOP_TIMEOUT.as_secs()))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => failure = Some(format!("cannot wait for it: {e}")),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let reason = failure.unwrap_or_default();
        Err(LaunchError::StopFailed {
            reason,
            log: self.log.display().to_string(),
        })
    }

    /// Kills the postmaster with SIGKILL and reaps it, for crash tests: the next [`start`](Self::start) on
    /// the same directory runs crash recovery. Its orphaned backends notice and exit on their own.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A PostgreSQL program, run as the `postgres` user when we are root, from the run directory.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bindir.join(program));
        // A process group of its own: Ctrl-C in our terminal must not reach Postgres before `pg_ctl stop`.
        command
            .current_dir(&self.run_dir)
            .stdin(Stdio::null())
            .process_group(0);
        for var in ["PGDATA", "PGPORT", "PGHOST", "PGUSER", "PGDATABASE"] {
            command.env_remove(var);
        }
        if let Some((uid, gid)) = self.as_user {
            command
                .uid(uid)
                .gid(gid)
                .env("HOME", &self.run_dir)
                .env("USER", "postgres");
        }
        command
    }

    fn initdb(&self) -> Result<(), LaunchError> {
        let dir = self.data_dir.display().to_string();
        let mut entries = fs::read_dir(&self.data_dir).map_err(io(format!("cannot list {dir}")))?;
        if entries.next().is_some() {
            return Err(LaunchError::NotACluster { dir });
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .output()
            .map_err(io("cannot run initdb"))?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Err(LaunchError::InitDb {
            dir,
            output: last_lines(&text, 20),
        })
    }

    /// Starts the postmaster on `port` and waits until it accepts connections.
    fn spawn(&mut self, port: u16) -> Result<(), LaunchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let log_name = self.log.display().to_string();
        loop {
            let mut log = OpenOptions::new()
                .append(true)
                .open(&self.log)
                .map_err(io(format!("cannot open {log_name}")))?;
            let offset = log
                .seek(SeekFrom::End(0))
                .map_err(io(format!("cannot seek {log_name}")))?;
            let _ = writeln!(log, "jarvis: starting postgres on 127.0.0.1:{port}");
            let stderr = log
                .try_clone()
                .map_err(io(format!("cannot share {log_name}")))?;
            let mut child = self
                .command("postgres")
                .arg("-D")
                .arg(&self.data_dir)
                .args([
                    "-p",
                    &port.to_string(),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                ])
                .arg(&self.run_dir)
                .stdout(log)
                .stderr(stderr)
                .spawn()
                .map_err(io("cannot run postgres"))?;
            let status = loop {
                if let Some(status) = child.try_wait().map_err(io("cannot wait for postgres"))? {
                    break status;
                }
                if accepts_connections(port) {
                    self.port = port;
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LaunchError::Timeout {
                        port,
                        log: log_name,
                        tail: self.log_since(offset),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let tail = self.log_since(offset);
            if tail.contains("pre-existing shared memory block") && Instant::now() < deadline {
                // Backends of a killed postmaster still hold its shared memory; they exit shortly.
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let dir = self.data_dir.display().to_string();
            return Err(
                if tail.contains("could not bind") || tail.contains("Address already in use") {
                    LaunchError::PortInUse { port }
                } else if tail.contains("lock file \"postmaster.pid\" already exists") {
                    LaunchError::AlreadyRunning { dir }
                } else {
                    LaunchError::Exited {
                        status: status.to_string(),
                        log: log_name,
                        tail,
                    }
                },
            );
        }
    }

    /// The last lines logged from byte `offset` on.
    fn log_since(&self, offset: u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file
                .seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_to_end(&mut text));
        }
        last_lines(&String::from_utf8_lossy(&text), 20)
    }
}

impl Drop for PostgresProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!("stopping the private postgres: {e}");
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`, else a `PATH` entry, that
/// holds both `initdb` and `postgres`.
fn find_bindir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| usable(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok();
    let from_pg_config = pg_config
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| usable(dir)) {
        return Some(dir);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).find(|dir| usable(dir)))
}

/// `id <args>`'s output, trimmed.
fn id(args: &[&str]) -> Option<String> {
    let out = Command::new("id")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks, as the `postgres` user, that it can write both directories; names the first it cannot traverse.
fn check_reachable(
    data_dir: &Path,
    run_dir: &Path,
    (uid, gid): (u32, u32),
) -> Result<(), LaunchError> {
    let can = |flag: &str, dir: &Path| {
        Command::new("test")
            .arg(flag)
            .arg(dir)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .status()
            .is_ok_and(|s| s.success())
    };
    if can("-w", data_dir) && can("-w", run_dir) {
        return Ok(());
    }
    let mut ancestors: Vec<&Path> = data_dir.ancestors().collect();
    ancestors.reverse();
    let blocked = ancestors
        .into_iter()
        .find(|dir| !can("-x", dir))
        .unwrap_or(data_dir);
    Err(LaunchError::Unreachable {
        blocked: blocked.display().to_string(),
        data_dir: data_dir.display().to_string(),
    })
}

/// A port the kernel considers free on 127.0.0.1 right now.
fn free_port() -> Result<u16, LaunchError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io("cannot find a free port on 127.0.0.1"))?;
    Ok(listener
        .local_addr()
        .map_err(io("cannot find a free port on 127.0.0.1"))?
        .port())
}

/// Whether the server answers a startup packet as anything but "the database system is starting up"
/// (SQLSTATE 57P03, also sent during crash recovery): authentication, or any other error, means it is up.
fn accepts_connections(port: u16) -> bool {
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for part in ["user", "postgres", "database", "postgres", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut message = (body.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend(body);
    let mut header = [0u8; 5];
    if stream
        .write_all(&message)
        .and_then(|()| stream.read_exact(&mut header))
        .is_err()
    {
        return false;
    }
    match header[0] {
        b'R' => {
            let _ = stream.write_all(&[b'X', 0, 0, 0, 4]); // Terminate
            true
        }
        b'E' => {
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut fields = vec![0u8; (len.saturating_sub(4) as usize).min(4096)];
            stream.read_exact(&mut fields).is_ok() && !fields.windows(5).any(|w| w == b"57P03")
        }
        _ => false,
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psql(url: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(url)
            .args(["-XtAq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A temp dir the `postgres` user can traverse when we are root.
    fn open_tempdir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        dir
    }

    #[test]
    fn server_survives_stop_and_kill() {
        let tmp = open_tempdir();
        let data = tmp.path().join("pgdata");
        // No skipping when the binaries are missing: scripts/test.sh installs them.
        let mut pg = PostgresProcess::start(&data, None).unwrap_or_else(|e| panic!("{e}"));
        let url = pg.url("postgres");
        assert_eq!(psql(&url, "SELECT 1"), "1");
        psql(
            &url,
            "CREATE TABLE survivor (x int); INSERT INTO survivor VALUES (42)",
        );
        let port = pg.port();
        let again = PostgresProcess::start(&data, None).err();
        assert!(
            matches!(again, Some(LaunchError::AlreadyRunning { .. })),
            "{again:?}"
        );
        pg.stop().expect("clean stop");
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let taken = squatter.local_addr().expect("addr").port();
        let refused = PostgresProcess::start(&data, Some(taken)).err();
        assert!(
            matches!(refused, Some(LaunchError::PortInUse { .. })),
            "{refused:?}"
        );
        drop(squatter);
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "still listening after stop"
        );

        let mut pg = PostgresProcess::start(&data, Some(port)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(psql(&url, "SELECT x FROM survivor"), "42");
        psql(&url, "INSERT INTO survivor VALUES (43)");
        pg.kill();

        let pg = PostgresProcess::start(&data, Some(port)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            psql(&pg.url("postgres"), "SELECT sum(x) FROM survivor"),
            "85"
        );
        let log = fs::read_to_string(pg.log_path()).expect("log");
        assert!(
            log.contains("not properly shut down"),
            "no crash recovery in the log:\n{log}"
        );
    }

    #[test]
    fn server_refuses_a_foreign_directory() {
        let tmp = open_tempdir();
        let data = tmp.path().join("pgdata");
        fs::create_dir_all(&data).expect("mkdir");
        fs::write(data.join("precious.txt"), "not a cluster").expect("write");
        match PostgresProcess::start(&data, None) {
            Err(LaunchError::NotACluster { .. } | LaunchError::BinariesNotFound) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("started on a foreign directory"),
        }
        assert!(data.join("precious.txt").exists());
    }

    #[test]
    fn server_names_the_directory_postgres_cannot_enter() {
        if id(&["-u"]).as_deref() != Some("0") || find_bindir().is_none() {
            return eprintln!("skipped: only root runs postgres as another user");
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).expect("chmod 0700");
        let err = PostgresProcess::start(&tmp.path().join("pgdata"), None).err();
        let blocked = tmp
            .path()
            .canonicalize()
            .expect("resolve")
            .display()
            .to_string();
        assert!(
            matches!(&err, Some(LaunchError::Unreachable { blocked: b, .. }) if *b == blocked),
            "{err:?}"
        );
        eprintln!("{}", err.expect("error"));
    }
}

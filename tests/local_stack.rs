//! `jarvis up` with nothing configured: it starts its own nats-server and Postgres, other commands find
//! them through `<data-dir>/stack.json`, and SIGTERM stops everything.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn jarvis(data_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jarvis"));
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env_remove("JARVIS_DATABASE_URL")
        .env_remove("JARVIS_NATS_URL")
        .env_remove("JARVIS_CONFIG")
        .env("JARVIS_LOG", "warn")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    cmd
}

/// `jarvis up`, stopped with SIGTERM (so it stops its servers) if the test fails before it does.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

fn pids_of(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn jarvis_up_runs_a_private_stack_that_other_commands_find_and_stops_it_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    // The private Postgres runs as the `postgres` user when we are root: it must reach the data dir.
    let _ = std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    );
    let data_dir = tmp.path().join("jarvis");
    let mut up = Up(jarvis(&data_dir)
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap());
    let mut banner = String::new();
    BufReader::new(up.0.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.starts_with("jarvis is up"), "{banner}");
    let stack: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("stack.json")).unwrap())
            .unwrap();
    let nats_url = stack["nats_url"].as_str().unwrap().to_string();
    let db_url = stack["database_url"].as_str().unwrap().to_string();
    assert!(
        nats_url.starts_with("nats://127.0.0.1:")
            && db_url.starts_with("postgres://postgres@127.0.0.1:")
    );

    let out = jarvis(&data_dir)
        .args(["ingest", "candles", "data/yahoo_sol_usd_1d.csv"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The relay inside `jarvis up` publishes what was ingested; `status` and `events tail` see it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = jarvis(&data_dir)
            .args(["status", "--json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if status["relay"]["lag_events"] == 0 && status["streams"][0]["messages"] == 787 {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "relay did not catch up: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["store"]["events"], 787);
    assert_eq!(status["nats_url"], nats_url.as_str());
    let out = jarvis(&data_dir)
        .args(["events", "tail", "--limit", "3", "--json"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["type"], "jarvis.market.CandleClosed.v1");
    assert_eq!(lines[0]["data"]["symbol"], "SOL/USD");

    // The kill switch answers on the private NATS: what `nats req jarvis.cmd.risk.halt` does.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let reply: serde_json::Value = runtime.block_on(async {
        let client = async_nats::connect(&nats_url).await.unwrap();
        let reply = client
            .request("jarvis.cmd.risk.halt", r#"{"reason":"test"}"#.into())
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    });
    assert_eq!(reply["halted"], true, "{reply}");

    // SIGTERM: the servers go with it, and so does stack.json.
    let data = data_dir.to_string_lossy().to_string();
    assert!(
        !pids_of(&data).is_empty(),
        "private servers run under {data}"
    );
    Command::new("kill")
        .args(["-TERM", &up.0.id().to_string()])
        .status()
        .unwrap();
    let code = up.0.wait().unwrap();
    assert!(code.success(), "jarvis up exits cleanly: {code}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pids_of(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left running: {:?}",
            pids_of(&data)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!data_dir.join("stack.json").exists());
}

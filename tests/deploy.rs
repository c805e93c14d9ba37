//! `deploy/` is valid: every YAML and JSON file parses, and the references between them hold: compose services
//! and ports, the commands each container runs (parsed by the real CLI), the `JARVIS_*` variables and the
//! ConfigMap's `jarvis.toml` (loaded through the real configuration loader, so unknown keys fail), Kubernetes
//! selectors, Services, probes, HPAs and PDBs, Secrets and ConfigMaps referenced, and the metric names alerts and
//! dashboards use (against `deploy/prometheus/metrics.yaml`, the list the gateway exports).
//!
//! Pieces other branches add (`jarvis gateway`, `[gateway] listen`) are tolerated while they are missing
//! from this build, and checked as soon as they exist: see [`PENDING`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_json::Value;

/// Subcommands and configuration sections that the deploy files use and other branches add. While this build
/// lacks one, its uses are reported and skipped; once it exists they are checked like the rest.
const PENDING: &[&str] = &["gateway"];

/// Environment variables the binary reads that are not configuration keys.
const NOT_CONFIG: &[&str] = &["JARVIS_LOG", "JARVIS_CONFIG", "JARVIS_DATA_DIR"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every document of a YAML or JSON file, as JSON values (empty documents dropped).
fn parse(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.display();
    if path.extension().is_some_and(|e| e == "json") {
        return vec![serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))];
    }
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn load(rel: &str) -> Vec<Value> {
    parse(&deploy_dir().join(rel))
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

/// A value of the right kind standing in for a Secret's key: a URL for the database, a long random-looking
/// key for the gateway's JWT secret (the gateway refuses a short one off loopback), `x` otherwise.
fn secret_stand_in(key: &str) -> &'static str {
    match key {
        "JARVIS_DATABASE_URL" => "postgres://jarvis:x@jarvis-pg-rw:5432/jarvis",
        "JARVIS_GATEWAY__JWT_SECRET" => "k3Jx9QvT7mW2pL8sN4rY6bH1cF5dG0aZ-stand-in",
        _ => "x",
    }
}

/// Problems found, reported all at once.
#[derive(Default)]
struct Report {
    errors: Vec<String>,
    pending: BTreeSet<String>,
}

impl Report {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.errors.push(what.into());
        }
    }

    fn finish(self) {
        for p in &self.pending {
            eprintln!("pending (added by another branch, not in this build yet): {p}");
        }
        assert!(
            self.errors.is_empty(),
            "deploy/ problems:\n  {}",
            self.errors.join("\n  ")
        );
    }
}

/// Parses a container's command with the real CLI.
fn check_command(report: &mut Report, where_: &str, args: &[String]) {
    let mut argv = vec!["jarvis".to_string()];
    argv.extend(args.iter().cloned());
    if let Err(e) = jarvis::Cli::try_parse_from(&argv) {
        let sub = args.first().map(String::as_str).unwrap_or("");
        if PENDING.contains(&sub) && e.kind() == clap::error::ErrorKind::InvalidSubcommand {
            report.pending.insert(format!("`jarvis {sub}` ({where_})"));
        } else {
            report.check(false, format!("{where_}: `jarvis {}`: {e}", args.join(" ")));
        }
    }
}

/// Loads `env` (and `toml`, as the configuration file) through the real loader; reports what it refuses.
fn check_config(
    report: &mut Report,
    where_: &str,
    env: &BTreeMap<String, String>,
    toml: Option<&str>,
) {
    let mut env: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("JARVIS_") && !NOT_CONFIG.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Sections of other branches: skipped (and reported) while this build does not know them.
    // An unknown section is named in the error; a known one names the unknown key `probe` instead.
    let known = |section: &str| {
        let probe = BTreeMap::from([(
            format!("JARVIS_{}__PROBE", section.to_uppercase()),
            "x".to_string(),
        )]);
        try_load(&probe, None).unwrap_err().contains("probe")
    };
    for section in PENDING {
        let prefix = format!("JARVIS_{}__", section.to_uppercase());
        if env.keys().any(|k| k.starts_with(&prefix)) && !known(section) {
            env.retain(|k, _| !k.starts_with(&prefix));
            report.pending.insert(format!("[{section}] ({where_})"));
        }
    }
    if let Err(e) = try_load(&env, toml) {
        report.check(
            false,
            format!("{where_}: the configuration is refused: {e}"),
        );
    }
}

#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
fn try_load(env: &BTreeMap<String, String>, toml: Option<&str>) -> Result<(), String> {
    let mut result = Ok(());
    let r = &mut result;
    let jailed = figment::Jail::try_with(|jail| {
        jail.clear_env();
        for (k, v) in env {
            jail.set_env(k, v);
        }
        if let Some(toml) = toml {
            jail.create_file("jarvis.toml", toml)?;
        }
        *r = jarvis::config::Config::load(None)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        Ok(())
    });
    if let Err(e) = jailed {
        return Err(format!("cannot set up the environment: {e}"));
    }
    result
}

/// `${VAR:-default}` → `default`; `${VAR:?message}` (the operator must set it) → a stand-in of the right kind.
fn expand(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').map(|e| at + e).unwrap();
        let inner = &rest[at + 2..end];
        match inner.split_once(":?") {
            Some((name, _)) => out.push_str(secret_stand_in(name)),
            None => out.push_str(inner.split_once(":-").map_or("", |(_, d)| d)),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn env_map(v: &Value) -> BTreeMap<String, String> {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), expand(&v))
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(|e| {
                s(e).split_once('=')
                    .map(|(k, v)| (k.to_string(), expand(v)))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn url_host_port(url: &str) -> (String, Option<u16>) {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    (u.host_str().unwrap_or("").to_string(), u.port())
}

/// `jarvis_*` metric names in a PromQL expression (plus `up`), without histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if word.starts_with("jarvis_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(&word);
            out.insert(base.to_string());
        }
        word.clear();
    }
    out
}

#[test]
fn every_yaml_and_json_file_parses() {
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    let mut parsed = 0;
    for path in all {
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            assert!(!parse(&path).is_empty(), "{}: no document", path.display());
            parsed += 1;
        }
    }
    assert!(parsed >= 15, "only {parsed} files");
}

#[test]
fn compose_services_ports_commands_and_environment_fit_together() {
    let mut report = Report::default();
    let compose = &load("compose.yaml")[0];
    let services = compose["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    for role in ["nats", "postgres", "relay", "agents", "gateway"] {
        report.check(names.contains(role), format!("compose: no service {role}"));
    }
    let volumes: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    // What each service listens on inside the network: nats 4222, postgres 5432, gateway its listen port.
    let mut listens: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    listens.entry("nats").or_default().extend([4222, 8222]);
    listens.entry("postgres").or_default().insert(5432);
    listens.entry("prometheus").or_default().insert(9090);
    listens.entry("grafana").or_default().insert(3000);
    for (name, svc) in services {
        let env = env_map(&svc["environment"]);
        if let Some(listen) = env.get("JARVIS_GATEWAY__LISTEN") {
            let port = listen.rsplit(':').next().unwrap().parse().unwrap();
            report.check(listen.starts_with("0.0.0.0:"), format!("compose {name}: the gateway must listen on 0.0.0.0 in a container, not {listen}"));
            listens.entry(name.as_str()).or_default().insert(port);
        }
    }
    for (name, svc) in services {
        let where_ = format!("compose service {name}");
        if let Some(build) = svc.get("build") {
            let context = deploy_dir().join(s(&build["context"]));
            report.check(
                context.join(s(&build["dockerfile"])).exists(),
                format!("{where_}: no {}", s(&build["dockerfile"])),
            );
        }
        for dep in svc["depends_on"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .or_else(|| {
                svc["depends_on"]
                    .as_array()
                    .map(|a| a.iter().map(|d| s(d).to_string()).collect())
            })
            .unwrap_or_default()
        {
            report.check(
                names.contains(dep.as_str()),
                format!("{where_}: depends on unknown {dep}"),
            );
        }
        for mount in svc["volumes"].as_array().into_iter().flatten() {
            let source = s(mount).split(':').next().unwrap();
            if source.starts_with('.') {
                report.check(
                    deploy_dir().join(source).exists(),
                    format!("{where_}: mounts missing {source}"),
                );
            } else {
                report.check(
                    volumes.contains(source),
                    format!("{where_}: undeclared volume {source}"),
                );
            }
        }
        // A published port maps onto what the service listens on.
        for port in svc["ports"].as_array().into_iter().flatten() {
            let inner: u16 = s(port).rsplit(':').next().unwrap().parse().unwrap();
            report.check(
                listens
                    .get(name.as_str())
                    .is_some_and(|l| l.contains(&inner)),
                format!("{where_}: publishes {inner}, which it does not listen on"),
            );
        }
        let image = svc["image"].as_str().unwrap_or("");
        if image.starts_with("jarvis") {
            let args: Vec<String> = svc["command"]
                .as_array()
                .unwrap_or_else(|| panic!("{where_}: no command"))
                .iter()
                .map(|a| s(a).to_string())
                .collect();
            check_command(&mut report, &where_, &args);
            let env = env_map(&svc["environment"]);
            for key in ["JARVIS_DATABASE_URL", "JARVIS_NATS_URL"] {
                let Some(url) = env.get(key) else {
                    report.check(false, format!("{where_}: no {key}"));
                    continue;
                };
                let (host, port) = url_host_port(url);
                report.check(
                    listens
                        .get(host.as_str())
                        .is_some_and(|l| port.is_none_or(|p| l.contains(&p))),
                    format!(
                        "{where_}: {key} points at {host}:{port:?}, which no service listens on"
                    ),
                );
            }
            check_config(&mut report, &where_, &env, None);
        }
    }
    // Prometheus scrapes what compose runs.
    let prometheus = &load("prometheus/prometheus.yml")[0];
    for job in prometheus["scrape_configs"].as_array().unwrap() {
        for target in job["static_configs"][0]["targets"].as_array().unwrap() {
            let (host, port) = s(target).split_once(':').unwrap();
            report.check(
                listens
                    .get(host)
                    .is_some_and(|l| l.contains(&port.parse().unwrap())),
                format!(
                    "prometheus job {}: target {} is not a compose service port",
                    job["job_name"],
                    s(target)
                ),
            );
        }
    }
    for rules in prometheus["rule_files"].as_array().unwrap() {
        report.check(
            deploy_dir().join("prometheus").join(s(rules)).exists(),
            format!("prometheus: no rule file {}", s(rules)),
        );
    }
    // Grafana's provisioning points at the dashboard where compose mounts it.
    let provider = &load("grafana/provisioning/dashboards/jarvis.yaml")[0];
    let path = s(&provider["providers"][0]["options"]["path"]);
    let grafana = &services["grafana"];
    report.check(
        grafana["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| s(m).contains(&format!(":{path}/"))),
        format!("grafana: provisioning reads {path}, compose mounts no dashboard there"),
    );
    report.finish();
}

#[test]
fn alerts_and_dashboards_use_only_exported_metrics() {
    let mut report = Report::default();
    let listed: BTreeSet<String> = load("prometheus/metrics.yaml")[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(&m["name"]).to_string())
        .collect();
    let mut used = BTreeSet::new();
    let alerts = &load("prometheus/alerts.yaml")[0];
    let mut alert_names = BTreeSet::new();
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = s(&rule["expr"]);
            alert_names.insert(s(&rule["alert"]).to_string());
            for m in metric_names(expr) {
                report.check(
                    listed.contains(&m),
                    format!("alert {}: {m} is not in metrics.yaml", rule["alert"]),
                );
                used.insert(m);
            }
        }
    }
    // The list of alerts.
    for a in [
        "JarvisRelayLagging",
        "JarvisConsumerLagging",
        "JarvisDeadLettersGrowing",
        "JarvisDrawdownNearHalt",
        "JarvisTradingHalted",
        "JarvisLlmBudgetNearCap",
        "JarvisAgentDown",
    ] {
        report.check(alert_names.contains(a), format!("alerts.yaml: no {a}"));
    }
    let dashboard = &load("grafana/jarvis.json")[0];
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            for m in metric_names(s(&target["expr"])) {
                report.check(
                    listed.contains(&m),
                    format!("panel {}: {m} is not in metrics.yaml", panel["title"]),
                );
                used.insert(m);
            }
        }
    }
    for m in &listed {
        report.check(
            used.contains(m),
            format!("metrics.yaml lists {m}, which nothing uses"),
        );
    }
    // The gateway exports them: checked once its metrics are in this build.
    let mut gateway = String::new();
    let mut sources = Vec::new();
    files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src"),
        &mut sources,
    );
    for f in sources {
        gateway.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    if gateway.contains("jarvis_http_requests_total") {
        for m in &listed {
            if !gateway.contains(m.as_str()) {
                report.pending.insert(format!("gateway metric {m}"));
            }
        }
    } else {
        report.pending.insert("the gateway's /metrics".into());
    }
    report.finish();
}

#[test]
fn kubernetes_manifests_reference_what_exists() {
    let mut report = Report::default();
    let kustomization = &load("k8s/kustomization.yaml")[0];
    let mut docs = Vec::new();
    for r in kustomization["resources"].as_array().unwrap() {
        let path = deploy_dir().join("k8s").join(s(r));
        report.check(path.exists(), format!("kustomization: no {}", s(r)));
        docs.extend(parse(&path));
    }
    let chart = &kustomization["helmCharts"][0];
    let values = &load(&format!("k8s/{}", s(&chart["valuesFile"])))[0];
    let nats_service = s(&chart["releaseName"]).to_string();
    report.check(
        values["config"]["cluster"]["replicas"] == 3,
        "nats-values: a 3-node cluster",
    );
    report.check(
        values["config"]["jetstream"]["enabled"] == true,
        "nats-values: JetStream on",
    );
    let of_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    let name = |d: &Value| s(&d["metadata"]["name"]).to_string();
    let config_maps: BTreeMap<String, &Value> = of_kind("ConfigMap")
        .into_iter()
        .map(|d| (name(d), d))
        .collect();
    let mut secrets: BTreeMap<String, BTreeSet<String>> = of_kind("Secret")
        .into_iter()
        .map(|d| {
            let keys = d["stringData"]
                .as_object()
                .or(d["data"].as_object())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            (name(d), keys)
        })
        .collect();
    // CloudNativePG generates `<cluster>-app` with the application user's `uri`.
    for cluster in of_kind("Cluster") {
        report.check(
            cluster["spec"]["instances"].as_u64().unwrap_or(0) >= 2,
            "postgres: a primary and a replica",
        );
        secrets.insert(
            format!("{}-app", name(cluster)),
            ["uri", "username", "password"].map(String::from).into(),
        );
    }
    let deployments = of_kind("Deployment");
    let mut services: BTreeSet<String> = of_kind("Service").into_iter().map(name).collect();
    services.insert(nats_service.clone());
    let labels_of = |d: &Value| -> BTreeMap<String, String> {
        d["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), s(v).to_string()))
            .collect()
    };
    let selects = |selector: &Value, labels: &BTreeMap<String, String>| {
        selector.as_object().is_some_and(|m| {
            !m.is_empty()
                && m.iter()
                    .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
    };
    let mut workloads: Vec<(String, &Value)> = deployments
        .iter()
        .map(|d| (format!("Deployment {}", name(d)), *d))
        .collect();
    workloads.extend(
        of_kind("Job")
            .into_iter()
            .map(|d| (format!("Job {}", name(d)), d)),
    );
    for (where_, d) in &workloads {
        let labels = labels_of(d);
        if d["kind"] == "Deployment" {
            report.check(
                selects(&d["spec"]["selector"]["matchLabels"], &labels),
                format!("{where_}: selector does not match its pods"),
            );
            report.check(
                d["spec"]["replicas"].as_u64().unwrap_or(0) >= 1,
                format!("{where_}: replicas"),
            );
        }
        let pod = &d["spec"]["template"]["spec"];
        let volumes: BTreeMap<String, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (s(&v["name"]).to_string(), v))
            .collect();
        for v in volumes.values() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                report.check(
                    config_maps.contains_key(cm),
                    format!("{where_}: no ConfigMap {cm}"),
                );
            }
        }
        for c in pod["containers"].as_array().unwrap() {
            let args: Vec<String> = c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| s(a).to_string())
                .collect();
            check_command(&mut report, where_, &args);
            let ports: BTreeMap<String, u64> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        s(&p["name"]).to_string(),
                        p["containerPort"].as_u64().unwrap(),
                    )
                })
                .collect();
            let mut env = BTreeMap::new();
            for e in c["env"].as_array().into_iter().flatten() {
                let key = s(&e["name"]).to_string();
                if let Some(v) = e["value"].as_str() {
                    env.insert(key, v.to_string());
                } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
                    let (secret, k) = (s(&r["name"]), s(&r["key"]));
                    report.check(
                        secrets.get(secret).is_some_and(|keys| keys.contains(k)),
                        format!("{where_}: no key {k} in Secret {secret}"),
                    );
                    // A URL of the right kind stands in for the secret's value.
                    let stand_in = secret_stand_in(&key);
                    env.insert(key, stand_in.to_string());
                }
            }
            for from in c["envFrom"].as_array().into_iter().flatten() {
                let secret = s(&from["secretRef"]["name"]);
                match secrets.get(secret) {
                    Some(keys) => env.extend(
                        keys.iter()
                            .map(|k| (k.clone(), secret_stand_in(k).to_string())),
                    ),
                    None => report.check(false, format!("{where_}: no Secret {secret}")),
                }
            }
            // JARVIS_CONFIG is a mounted ConfigMap key; load it with the environment.
            let mut toml = None;
            if let Some(path) = env.get("JARVIS_CONFIG") {
                let (dir, file) = path.rsplit_once('/').unwrap();
                let mount = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| s(&m["mountPath"]) == dir);
                let cm = mount
                    .and_then(|m| volumes.get(s(&m["name"])))
                    .and_then(|v| v["configMap"]["name"].as_str())
                    .and_then(|n| config_maps.get(n));
                match cm.and_then(|cm| cm["data"][file].as_str()) {
                    Some(text) => toml = Some(text.to_string()),
                    None => report.check(
                        false,
                        format!("{where_}: JARVIS_CONFIG {path} is no mounted ConfigMap key"),
                    ),
                }
            }
            if let Some(text) = &toml {
                let config: toml_like::Nats = toml_like::nats(text);
                report.check(
                    config.replicas == Some(3),
                    format!("{where_}: [nats] replicas must be 3 on the R3 cluster"),
                );
                if let Some(url) = &config.url {
                    let (host, port) = url_host_port(url);
                    report.check(
                        services.contains(&host) && port == Some(4222),
                        format!("{where_}: nats.url {url} is not the NATS Service"),
                    );
                }
            }
            if let Some(url) = env.get("JARVIS_DATABASE_URL") {
                let (host, _) = url_host_port(url);
                report.check(
                    host.starts_with("jarvis-pg-"),
                    format!("{where_}: the database is CloudNativePG's service, not {host}"),
                );
            }
            check_config(&mut report, where_, &env, toml.as_deref());
            for probe in ["readinessProbe", "livenessProbe"] {
                let Some(get) = c[probe]["httpGet"].as_object() else {
                    continue;
                };
                let path = s(&get["path"]);
                report.check(
                    matches!(path, "/healthz" | "/readyz"),
                    format!("{where_}: {probe} on {path}"),
                );
                let port = &get["port"];
                report.check(
                    port.as_str().is_none_or(|p| ports.contains_key(p)),
                    format!("{where_}: {probe} on unknown port {port}"),
                );
            }
            if args.first().map(String::as_str) == Some("gateway") {
                report.check(
                    c["readinessProbe"]["httpGet"]["path"] == "/readyz",
                    format!("{where_}: readiness on /readyz"),
                );
                report.check(
                    c["livenessProbe"]["httpGet"]["path"] == "/healthz",
                    format!("{where_}: liveness on /healthz"),
                );
                report.check(
                    env.get("JARVIS_GATEWAY__LISTEN").is_some_and(|l| {
                        l.ends_with(&format!(":{}", ports.get("http").copied().unwrap_or(0)))
                    }),
                    format!("{where_}: [gateway] listen is not the http port"),
                );
            }
        }
    }
    for svc in of_kind("Service") {
        let target = deployments
            .iter()
            .find(|d| selects(&svc["spec"]["selector"], &labels_of(d)));
        report.check(
            target.is_some(),
            format!("Service {}: selects no Deployment", name(svc)),
        );
        if let Some(d) = target {
            let names: BTreeSet<&str> = d["spec"]["template"]["spec"]["containers"][0]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| s(&p["name"]))
                .collect();
            for p in svc["spec"]["ports"].as_array().unwrap() {
                let t = &p["targetPort"];
                report.check(
                    t.as_str().is_none_or(|t| names.contains(t)),
                    format!(
                        "Service {}: targetPort {t} is not a container port",
                        name(svc)
                    ),
                );
            }
        }
    }
    let deployment_names: BTreeSet<String> = deployments.iter().map(|d| name(d)).collect();
    for hpa in of_kind("HorizontalPodAutoscaler") {
        let target = s(&hpa["spec"]["scaleTargetRef"]["name"]);
        report.check(
            deployment_names.contains(target),
            format!("HPA {}: no Deployment {target}", name(hpa)),
        );
    }
    let pdbs = of_kind("PodDisruptionBudget");
    report.check(!pdbs.is_empty(), "no PodDisruptionBudget");
    for pdb in pdbs {
        report.check(
            deployments
                .iter()
                .any(|d| selects(&pdb["spec"]["selector"]["matchLabels"], &labels_of(d))),
            format!("PDB {}: selects no Deployment", name(pdb)),
        );
    }
    for role in [
        "jarvis-relay",
        "jarvis-trading",
        "jarvis-workers",
        "jarvis-gateway",
    ] {
        report.check(
            deployment_names.contains(role),
            format!("no Deployment {role}"),
        );
    }
    report.finish();
}

/// Just enough of `jarvis.toml` to check `[nats]` against the cluster (the loader checks the rest).
mod toml_like {
    pub struct Nats {
        pub url: Option<String>,
        pub replicas: Option<u64>,
    }

    pub fn nats(text: &str) -> Nats {
        let mut section = "";
        let mut out = Nats {
            url: None,
            replicas: None,
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line;
            } else if section == "[nats]" {
                if let Some((k, v)) = line.split_once('=') {
                    let v = v.trim().trim_matches('"').to_string();
                    match k.trim() {
                        "url" => out.url = Some(v),
                        "replicas" => out.replicas = v.parse().ok(),
                        _ => {}
                    }
                }
            }
        }
        out
    }
}

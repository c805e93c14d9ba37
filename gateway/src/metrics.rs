//! `/metrics`: Prometheus text. HTTP requests and latency by route, event-stream clients, bus commands, and
//! figures the read models report at scrape time (relay lag, projector lag, trades, LLM cost).

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::models::Gauges;

/// The gateway's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by method, route and status.
    pub requests: IntCounterVec,
    /// Latency by method and route.
    pub latency: HistogramVec,
    /// Open event streams.
    pub sse_clients: IntGauge,
    /// Bus commands by subject and outcome.
    pub commands: IntCounterVec,
    relay_lag: IntGauge,
    projector_lag: IntGaugeVec,
    trades: IntGauge,
    llm_cost: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("jarvis_http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "jarvis_http_request_duration_seconds",
                "Time to answer an HTTP request",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["method", "route"],
        )
        .expect("valid metric");
        let sse_clients =
            IntGauge::new("jarvis_sse_clients", "Open event streams").expect("valid metric");
        let commands = IntCounterVec::new(
            Opts::new("jarvis_bus_commands_total", "Commands sent to bus services"),
            &["subject", "outcome"],
        )
        .expect("valid metric");
        let relay_lag = IntGauge::new(
            "jarvis_relay_lag_events",
            "Events stored but not yet published by the relay",
        )
        .expect("valid metric");
        let projector_lag = IntGaugeVec::new(
            Opts::new(
                "jarvis_projector_lag_events",
                "Events a projector is behind",
            ),
            &["projector"],
        )
        .expect("valid metric");
        let trades = IntGauge::new("jarvis_trades_total", "Fills recorded").expect("valid metric");
        let llm_cost =
            Gauge::new("jarvis_llm_cost_usd_total", "LLM spend in USD").expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(sse_clients.clone()),
            Box::new(commands.clone()),
            Box::new(relay_lag.clone()),
            Box::new(projector_lag.clone()),
            Box::new(trades.clone()),
            Box::new(llm_cost.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            latency,
            sse_clients,
            commands,
            relay_lag,
            projector_lag,
            trades,
            llm_cost,
        }
    }

    /// The text exposition, after taking `gauges` in.
    pub fn render(&self, gauges: &Gauges) -> String {
        if let Some(lag) = gauges.relay_lag {
            self.relay_lag.set(lag);
        }
        for (name, lag) in &gauges.projector_lag {
            self.projector_lag.with_label_values(&[name]).set(*lag);
        }
        if let Some(t) = gauges.trades_total {
            self.trades.set(t as i64);
        }
        if let Some(c) = gauges.llm_cost_usd {
            self.llm_cost.set(c);
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

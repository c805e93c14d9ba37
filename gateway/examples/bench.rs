//! `jarvis bench gateway` without the rest of `jarvis`, for a quick release build:
//! `cargo run --release -p jarvis-gateway --example bench -- [connections] [secs]`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let connections = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let secs = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let report = jarvis_gateway::bench::run(connections, secs).await?;
    println!("{report}");
    Ok(())
}

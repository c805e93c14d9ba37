//! The `jarvis` binary: a shim over the `jarvis` library.

/// mimalloc: the pipeline (live and in backtests) allocates many small, short-lived values; with the
/// system allocator `malloc`/`free` were about a third of a backtest's time (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    jarvis::main()
}

//! The `jarvis` binary: a shim over the `jarvis` library.

fn main() -> std::process::ExitCode {
    jarvis::main()
}

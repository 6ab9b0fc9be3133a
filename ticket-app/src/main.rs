//! The `ticket` binary: everything is in [`ticket_app::cli`], so tests and embedding programs
//! can reach it without spawning a process.

fn main() -> std::process::ExitCode {
    ticket_app::cli::main()
}

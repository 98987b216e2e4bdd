//! `tenant-worker`: runs until SIGTERM/SIGINT.

fn main() -> std::process::ExitCode {
    tenant_worker::main_entry()
}

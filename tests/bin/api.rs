//! `tenant-api`'s program, for tests that run real API processes.

fn main() -> std::process::ExitCode {
    tenant_api::cli::main_entry()
}

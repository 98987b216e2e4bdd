//! `tenant-api [serve | migrate | dev-token …]`.

fn main() -> std::process::ExitCode {
    tenant_api::cli::main_entry()
}

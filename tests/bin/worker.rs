//! `tenant-worker`'s program, for tests that run and kill real worker processes.

fn main() -> std::process::ExitCode {
    tenant_worker::main_entry()
}

//! `tenant-worker`: runs until SIGTERM/SIGINT.

/// mimalloc, as in `tenant-api`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tenant_worker::main_entry()
}

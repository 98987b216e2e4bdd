//! `tenant-api [serve | migrate | dev-token …]`.

/// mimalloc: glibc's allocator showed as ~15 % of the API's CPU under load (malloc, free,
/// consolidation); the service allocates many small, short-lived buffers per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tenant_api::cli::main_entry()
}

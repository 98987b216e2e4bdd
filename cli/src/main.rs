//! `tenantctl`: see the library's `main_entry`.

fn main() -> std::process::ExitCode {
    tenantctl::main_entry()
}

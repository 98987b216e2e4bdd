//! `tenantctl`'s program, for the tests that run the command line against a real API.

fn main() -> std::process::ExitCode {
    tenantctl::main_entry()
}

//! The `mica` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    mica::cli::main()
}

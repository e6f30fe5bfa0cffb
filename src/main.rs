//! The `iwant` binary: parses the command line and hands it to [`iwant::cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    iwant::cli::run(iwant::cli::Cli::parse())
}

//! The `tierstream` binary: parse the command line, set up logging, hand over.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = tierstream::cli::Cli::parse();
    cli.log_format.init();
    match tierstream::cli::execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

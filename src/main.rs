//! The `tierstream` binary: parse the command line, set up logging, hand over.

use clap::Parser;

/// mimalloc instead of glibc's allocator: the engine allocates and frees
/// small objects per event (profiles, outputs, JSON), and glibc's malloc
/// and free were a quarter of replay's time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

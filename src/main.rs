use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, like any Unix tool's.
    migrate::sys::default_sigpipe();
    let cli = migrate::cli::Cli::parse();
    match migrate::cmd::run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("migrate: {}", anyhow::Error::from(e));
            ExitCode::from(125)
        }
    }
}

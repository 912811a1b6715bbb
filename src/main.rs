use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = migrate::cli::Cli::parse();
    match migrate::cmd::run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("migrate: {}", anyhow::Error::from(e));
            ExitCode::from(125)
        }
    }
}

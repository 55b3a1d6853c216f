//! The `ferrocast` command line: `serve`, `genconfig`, `checkconfig`, `gentoken`.

use crate::config::{Config, DEFAULT_CONFIG_TOML, LogFormat, Overrides};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// ferrocast: a clustered WebSocket pub/sub broker speaking the Centrifugo protocol.
#[derive(Parser, Debug)]
#[command(name = "ferrocast", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    /// Human readable text.
    Text,
    /// JSON lines.
    Json,
}

/// Common flags of commands that read the configuration.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Configuration file (TOML, or JSON by extension or content).
    #[arg(long, short = 'c', env = "FERROCAST_CONFIG")]
    config: Option<PathBuf>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker.
    Serve {
        /// Configuration file and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen address (http_server.address).
        #[arg(long)]
        address: Option<String>,
        /// Listen port (http_server.port; 0 picks a free port).
        #[arg(long)]
        port: Option<u16>,
        /// Node name (node.name).
        #[arg(long)]
        name: Option<String>,
        /// Redis address(es): switches to the Redis engine (engine.redis.address).
        #[arg(long, value_delimiter = ',')]
        redis: Vec<String>,
        /// Log format (log.format).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        /// Log level or filter (log.level).
        #[arg(long)]
        log_level: Option<String>,
    },
    /// Print a commented configuration file with every key at its default.
    Genconfig {
        /// Write to this file instead of standard output (refuses to overwrite).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Validate a configuration file (and the FERROCAST_ environment).
    Checkconfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print an HS256 connection token signed with client.token.hmac_secret_key.
    Gentoken {
        /// Configuration file and overrides.
        #[command(flatten)]
        config: ConfigArgs,
        /// User id (`sub` claim).
        #[arg(long, short = 'u')]
        user: String,
        /// Lifetime in seconds (0: no expiry).
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Connection info (`info` claim), a JSON value.
        #[arg(long)]
        info: Option<String>,
        /// Channels to subscribe server-side (`channels` claim).
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
    },
}

fn env() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// Runs the command line.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            address,
            port,
            name,
            redis,
            log_format,
            log_level,
        } => {
            let overrides = Overrides {
                address,
                port,
                name,
                redis,
                log_format: log_format.map(|f| match f {
                    LogFormatArg::Text => LogFormat::Text,
                    LogFormatArg::Json => LogFormat::Json,
                }),
                log_level,
            };
            let cfg = Config::load(config.config.as_deref(), env(), &overrides)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?;
            rt.block_on(async {
                let tracing = crate::observability::init_tracing(
                    &cfg.log,
                    &cfg.opentelemetry,
                    &cfg.node.name,
                )?;
                let served = crate::serve::serve(cfg).await;
                tracing.shutdown().await;
                served
            })
        }
        Command::Genconfig { output } => {
            match output {
                None => print!("{DEFAULT_CONFIG_TOML}"),
                Some(path) => {
                    if path.exists() {
                        anyhow::bail!("{} exists; not overwriting", path.display());
                    }
                    std::fs::write(&path, DEFAULT_CONFIG_TOML)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
            }
            Ok(())
        }
        Command::Checkconfig { file } => {
            Config::load(Some(&file), env(), &Overrides::default())?;
            println!("{}: configuration is valid", file.display());
            Ok(())
        }
        Command::Gentoken {
            config,
            user,
            ttl,
            info,
            channels,
        } => {
            let cfg = Config::load(config.config.as_deref(), env(), &Overrides::default())?;
            let token = crate::token::generate(
                &cfg.client.token.hmac_secret_key,
                &user,
                ttl,
                info.as_deref(),
                &channels,
            )?;
            println!("{token}");
            Ok(())
        }
    }
}

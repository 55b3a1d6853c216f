//! The `ferrocast` command line: `serve`, `genconfig`, `checkconfig`, `gentoken`.

use crate::config::{Config, DEFAULT_CONFIG_TOML, LogFormat, Overrides};
use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The command line (`ferrocast --help`).
#[derive(Parser, Debug)]
#[command(
    name = "ferrocast",
    version,
    about = "ferrocast: a real-time messaging server (WebSocket pub/sub) that speaks Centrifugo's \
             client protocol and server API; one node on its own, or a cluster over Redis.",
    after_help = "Start a broker on :8000 with the in-memory engine (one node):\n  \
                  ferrocast serve --config config/dev.toml\n\
                  Start a node of a cluster:\n  \
                  ferrocast serve --config ferrocast.toml --redis redis://10.0.0.5:6379\n\
                  Print every configuration key with its default:\n  \
                  ferrocast genconfig\n\n\
                  Clients connect to ws://<host>:8000/connection/websocket; backends publish \
                  with POST /api/publish (X-API-Key)."
)]
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
    #[command(after_help = "Examples:\n  \
        ferrocast serve --config config/dev.toml\n  \
        ferrocast serve --config ferrocast.toml --port 8001 --name node-2 --redis redis://127.0.0.1:6379\n  \
        FERROCAST_HTTP_API_KEY=secret ferrocast serve --config ferrocast.toml --log-format json")]
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
    #[command(after_help = "Example:\n  ferrocast genconfig -o ferrocast.toml")]
    Genconfig {
        /// Write to this file instead of standard output (refuses to overwrite).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Validate a configuration file (and the FERROCAST_ environment).
    #[command(
        after_help = "Example (exits 1 and names the key at fault when invalid):\n  \
        ferrocast checkconfig ferrocast.toml"
    )]
    Checkconfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print an HS256 connection token signed with client.token.hmac_secret_key.
    #[command(
        after_help = "Example:\n  ferrocast gentoken --config config/dev.toml --user 42 --ttl 600"
    )]
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

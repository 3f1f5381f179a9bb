//! The `tessera` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::startup::{Application, Migrations, open_store};

/// tessera: short-lived access tokens, rotating refresh tokens, revocation.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file; `TESSERA_*` environment variables override it.
    #[arg(long, global = true, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Do not apply database migrations at start (refuse to start if any are pending).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
}

/// Runs a parsed command line with a validated configuration.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_migrate } => {
            let migrations = if no_migrate {
                Migrations::Skip
            } else {
                Migrations::Apply
            };
            let listen = config.listen;
            let engine = config.engine();
            let app = Application::build(config, migrations).await?;
            tracing::info!(%listen, port = app.port(), ?engine, "tessera is listening");
            app.run_until_stopped().await?;
            Ok(())
        }
        Command::Migrate => {
            let store = open_store(&config, Migrations::Apply).await?;
            store.close().await;
            println!("database schema is up to date");
            Ok(())
        }
    }
}

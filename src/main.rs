use std::process::ExitCode;

use clap::Parser;
use tessera::cli::{Cli, run};
use tessera::config::Config;

fn main() -> ExitCode {
    tessera::telemetry::bound_allocator_retention();
    let cli = Cli::parse();
    let config = match Config::from_env(cli.config.as_deref())
        .and_then(|config| tessera::startup::check_files(&config).map(|()| config))
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tessera: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    tessera::telemetry::init(config.log_format, &config.log_level);
    match actix_web::rt::System::new().block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` joins the context chain into one line.
            eprintln!("tessera: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `sluice` binary: parses flags, sets up logging, runs the server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod cli;
use sluice::config::{Config, env_name, known_keys};
use sluice::server::{Server, ServerOptions, run};
use sluice::telemetry::Telemetry;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "gRPC storage gateway with exactly-once recoverable writes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC until Ctrl-C or SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: String,
        /// Holds sled state, the handle-signing key and the default file root (files/).
        #[arg(long, default_value = "./sluice-data")]
        data_dir: PathBuf,
        /// YAML file with Flink-style keys (see `sluice keys`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address of the admin HTTP port (/metrics, /healthz, /readyz); `off` disables it.
        #[arg(long, default_value = "127.0.0.1:9464")]
        admin_listen: String,
        /// Log lines as human-readable text or as JSON objects.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Copy a local file to a gateway URI, resumably (or a URI to a local file).
    ///
    /// Persists every --persist-every bytes and keeps the last handle in
    /// `.<name>.sluice-cp` beside the source: after Ctrl-C or a crash, the
    /// same command goes on from there and commits exactly once.
    Cp {
        source: String,
        dest: String,
        /// Bytes between persists (each one is a checkpoint to resume from).
        #[arg(long, default_value = "64mb", value_parser = parse_size)]
        persist_every: u64,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        conn: cli::Connection,
    },
    /// Print a committed file to stdout.
    Cat {
        path: String,
        #[command(flatten)]
        conn: cli::Connection,
    },
    /// List a directory: size, modified time (Unix seconds), name.
    Ls {
        path: String,
        #[command(flatten)]
        conn: cli::Connection,
    },
    /// Delete a file (or, with -r, a directory and everything under it).
    Rm {
        path: String,
        #[arg(short, long)]
        recursive: bool,
        #[command(flatten)]
        conn: cli::Connection,
    },
    /// List the configuration keys sluice understands.
    Keys,
    /// Print a new random bearer token and the SHA-256 hash the config holds.
    Token {
        /// The principal the lines are for.
        #[arg(long, default_value = "<name>")]
        principal: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `64mb`, `512kb`, `4096`.
fn parse_size(s: &str) -> Result<u64, String> {
    match sluice::settings::parse_memory_size("--persist-every", s) {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err("give a size above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs one of the command-line client's commands.
fn client_command(
    command: impl std::future::Future<Output = Result<(), String>>,
) -> std::process::ExitCode {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Cp {
            source,
            dest,
            persist_every,
            quiet,
            conn,
        } => {
            let progress = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
            client_command(
                async move { cli::cp(&conn, &source, &dest, persist_every, progress).await },
            )
        }
        Command::Cat { path, conn } => client_command(async move { cli::cat(&conn, &path).await }),
        Command::Ls { path, conn } => client_command(async move { cli::ls(&conn, &path).await }),
        Command::Rm {
            path,
            recursive,
            conn,
        } => client_command(async move { cli::rm(&conn, &path, recursive).await }),
        Command::Keys => {
            for (key, what) in known_keys() {
                println!("{key}\n    {what}\n    env: {}", env_name(key));
            }
            std::process::ExitCode::SUCCESS
        }
        Command::Token { principal } => match sluice::auth::new_token() {
            Ok((token, hash)) => {
                println!("token (give it to the client, keep it secret): {token}");
                println!("config line: auth.principals.{principal}.token-sha256: {hash}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sluice: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Serve {
            listen,
            data_dir,
            config,
            admin_listen,
            log_format,
        } => {
            sluice::server::tune_allocator();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            let served = runtime.block_on(async {
                let config =
                    Config::load(config.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
                let telemetry = Telemetry::from_env(&config).map_err(|e| e.to_string())?;
                init_logs(log_format, &telemetry);
                let served = serve(listen, data_dir, config, admin_listen).await;
                telemetry.shutdown().await;
                served
            });
            match served {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs (text or JSON) to stderr, and spans to OpenTelemetry when it is on.
fn init_logs(format: LogFormat, telemetry: &Telemetry) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry()
        .with(telemetry.layer())
        .with(filter);
    match format {
        LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}

async fn serve(
    listen: String,
    data_dir: PathBuf,
    config: Config,
    admin_listen: String,
) -> Result<(), String> {
    let mut server =
        Server::start(ServerOptions::new(data_dir, config)).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e} (pick another --listen address)"))?;
    if admin_listen != "off" {
        let admin = tokio::net::TcpListener::bind(&admin_listen).await.map_err(|e| {
            format!("cannot listen on {admin_listen}: {e} (pick another --admin-listen address, or off)")
        })?;
        server = server.with_admin(admin);
    }
    run(listener, server, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

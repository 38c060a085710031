//! `amqp`: a command-line AMQP 0-9-1 client.
//!
//! * `amqp perf` measures a broker and this client (PerfTest's flags: `-x -y -s -r -c -q -A
//!   -z -C`), with a live line each second, a summary, and `--json` for machines; `--sink`
//!   runs it against an in-process fake broker: the client's own ceiling.
//! * `amqp publish | consume | get | declare | delete | bind | unbind` poke at a broker.
//!
//! Errors print the broker's reply code and text and exit with a code per class of failure
//! (see `amqp --help`).
#![forbid(unsafe_code)]

mod commands;
mod error;
mod perf;
mod sink;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{CliError, EXIT_CODES_HELP};

/// The broker every command talks to unless `--uri` says otherwise.
pub const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A command-line AMQP 0-9-1 client, with a PerfTest-style `perf` mode.
#[derive(Debug, Parser)]
#[command(name = "amqp", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure throughput and latency: producers and consumers through one queue.
    #[command(after_help = EXIT_CODES_HELP)]
    Perf(perf::PerfArgs),
    /// Publish a message (body from the argument, --file, or stdin; --lines: one per line).
    Publish(commands::PublishArgs),
    /// Print a queue's messages as they arrive.
    Consume(commands::ConsumeArgs),
    /// Fetch one message (basic.get).
    Get(commands::GetArgs),
    /// Declare a queue or an exchange.
    #[command(subcommand)]
    Declare(commands::Entity),
    /// Delete a queue or an exchange.
    #[command(subcommand)]
    Delete(commands::Entity),
    /// Bind a queue (or an exchange) to an exchange.
    Bind(commands::BindArgs),
    /// Remove a binding.
    Unbind(commands::BindArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Perf(args) => perf::run(args).map(drop),
        other => run_tokio(other),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amqp: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn run_tokio(command: Command) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Publish(a) => commands::publish(a).await,
            Command::Consume(a) => commands::consume(a).await,
            Command::Get(a) => commands::get(a).await,
            Command::Declare(e) => commands::declare(e).await,
            Command::Delete(e) => commands::delete(e).await,
            Command::Bind(a) => commands::bind(a, false).await,
            Command::Unbind(a) => commands::bind(a, true).await,
            Command::Perf(_) => unreachable!("perf runs on its own runtime"),
        }
    })
}

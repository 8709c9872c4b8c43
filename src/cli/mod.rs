//! The `atrest` command.

pub mod client;

use clap::Parser;

/// Encryption at rest for a storage node.
#[derive(Parser)]
#[command(name = "atrest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Client(c) => client::run(c),
    }
}

//! `ocr-ctl` entry point.

use std::io::IsTerminal;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = ocr_ctl::Cli::parse();
    cli.terminal = std::io::stdout().is_terminal();
    let sdk = ocr_ctl::sdk_config(&cli).await;
    let mut stdout = std::io::stdout();
    match ocr_ctl::run(cli, &sdk, &mut stdout).await {
        Ok(ocr_ctl::Outcome::Done) => std::process::ExitCode::SUCCESS,
        Ok(ocr_ctl::Outcome::NothingMatched) => std::process::ExitCode::from(1),
        Err(e) => {
            // An error may quote stored data (a public id, a reason): shown as the rest is.
            eprintln!("error: {}", ocr_ctl::terminal::escaped(&format!("{e:#}")));
            std::process::ExitCode::from(2)
        }
    }
}

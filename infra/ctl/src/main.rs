//! `ocr-ctl` entry point.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ocr_ctl::Cli::parse();
    let sdk = ocr_ctl::sdk_config(&cli).await;
    let mut stdout = std::io::stdout();
    match ocr_ctl::run(cli, &sdk, &mut stdout).await {
        Ok(ocr_ctl::Outcome::Done) => std::process::ExitCode::SUCCESS,
        Ok(ocr_ctl::Outcome::NothingMatched) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

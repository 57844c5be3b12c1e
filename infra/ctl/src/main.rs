//! `ocr-ctl` entry point.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = ocr_ctl::Cli::parse();
    let sdk = ocr_ctl::sdk_config().await;
    let mut stdout = std::io::stdout();
    match ocr_ctl::run(cli, &sdk, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

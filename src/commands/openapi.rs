//! `taskqueue openapi [--markdown]`: print the API's OpenAPI document (the
//! one `GET /openapi.json` serves), or `docs/api.md` rendered from it.

use std::process::ExitCode;

use crate::routes::api;

/// Arguments of `taskqueue openapi`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenApiArgs {
    /// Print the document rendered as Markdown (`docs/api.md`).
    #[arg(long)]
    pub markdown: bool,
}

/// Prints the document (JSON) or its Markdown rendering.
pub fn run(args: OpenApiArgs) -> ExitCode {
    if args.markdown {
        print!("{}", api::markdown(&api::openapi()));
    } else {
        println!("{}", api::openapi_text());
    }
    ExitCode::SUCCESS
}

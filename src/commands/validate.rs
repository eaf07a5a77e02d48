//! `taskqueue validate`: check configuration without running anything.

use std::process::ExitCode;

use crate::{commands::ConfigArgs, configuration};

/// Validates the configuration named by `args`: on success prints a
/// one-line summary (and any warnings) and exits 0; otherwise prints every
/// problem on stderr and exits 1.
pub fn run(args: ConfigArgs) -> ExitCode {
    match configuration::load(&args.config) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            let files: Vec<String> = args
                .config
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let files = if files.is_empty() {
                "defaults".to_owned()
            } else {
                files.join(", ")
            };
            println!(
                "configuration valid: {files}; {} task(s) from {}; {} warning(s)",
                loaded.tasks.len(),
                loaded.tasks_file.display(),
                loaded.warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for problem in &errors.problems {
                eprintln!("{problem}");
            }
            let count = errors.errors().count();
            eprintln!("configuration invalid: {count} error(s)");
            ExitCode::FAILURE
        }
    }
}

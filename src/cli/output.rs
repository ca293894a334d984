//! Standard output for the commands: a reader that goes away (`riskgate status | head -1`) ends
//! the command quietly with success, as it does for the shell's own tools, rather than with a
//! panic; any other failure to write says so and fails.

use std::io::Write;

/// Writes `text` to standard output and flushes it.
pub(super) fn write(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(
            std::io::stderr(),
            "riskgate: cannot write to standard output: {error}"
        );
        std::process::exit(1);
    }
}

/// `print!` that ends quietly when the reader went away.
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::output::write(format_args!($($arg)*)) };
}

/// `println!` that ends quietly when the reader went away.
macro_rules! sayln {
    ($($arg:tt)*) => { $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(super) use {say, sayln};

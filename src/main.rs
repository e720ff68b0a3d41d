//! The `yurthub` binary: parse flags, set up logging, run.

use std::io::Write;
use yurthub::app;
use yurthub::app::config::{usage, Config, Parsed};

fn main() {
    // `yurthub cache ...` inspects the cache instead of running the hub.
    if std::env::args().nth(1).as_deref() == Some("cache") {
        let code = yurthub::app::cache_cli::main(
            std::env::args().skip(2),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        std::process::exit(code);
    }
    // `yurthub reset` removes what the hub keeps on the node.
    if std::env::args().nth(1).as_deref() == Some("reset") {
        let code = yurthub::app::reset::main(
            std::env::args().skip(2),
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        std::process::exit(code);
    }
    let config = match Config::from_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(c)) => c,
        Ok(Parsed::Help) => {
            let _ = write!(std::io::stdout(), "{}", usage());
            return;
        }
        Ok(Parsed::Version) => {
            let _ = writeln!(
                std::io::stdout(),
                "{} ({}/{})",
                app::VERSION,
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            return;
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "yurthub: {e}");
            std::process::exit(2);
        }
    };
    let level = match config.verbosity {
        0..=1 => log::LevelFilter::Info,
        2..=4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    app::logging::init(level);
    config.log_no_effect();
    if let Err(e) = app::run(&config) {
        log::error!("{e}");
        std::process::exit(1);
    }
}

//! `buildit check DRV…|DIR [--rounds N] [--against URL]`: are these outputs
//! reproducible? Exit status 0 = yes, 1 = no, 2 = the check could not be made.

use std::io::Write;

use super::output::{note, print_json, warn_untrusted};
use super::progress::{Reporter, ReporterOptions};
use super::realise::{summarise, BuildArgs};
use super::{CliError, CliResult, Global};
use crate::audit::outputs::DiffOptions;
use crate::ops::cache as cache_ops;
use crate::ops::check::{deep_targets, CheckError, CheckReport, Checker};
use crate::ops::realise::{outputs, resolve_targets};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    build: BuildArgs,
    /// How many times to rebuild each output, each time with other variations
    /// (core count, environment order, the filesystem under /build).
    #[arg(long, value_name = "N", default_value_t = 2)]
    rounds: usize,
    /// Rebuild every package built from source below the targets too, and the
    /// images, not only the targets.
    #[arg(long)]
    deep: bool,
    /// Also compare each output with what this binary cache holds (repeatable);
    /// no key is needed, nothing is imported.
    #[arg(long = "against", value_name = "URL")]
    against: Vec<String>,
    /// Print the verdicts (and diffs) as JSON.
    #[arg(long)]
    json: bool,
    /// `.drv` paths, outputs (rebuilt from their derivation), or a spec directory
    /// (its packages and images).
    #[arg(required = true, value_name = "DRV|DIR")]
    targets: Vec<String>,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    match run(global, &args) {
        Ok(report) => {
            render(&report, args.json)?;
            if report.reproducible() {
                Ok(())
            } else {
                Err(CliError::Reported(1))
            }
        }
        Err(CliError::Reported(code)) => Err(CliError::Reported(code.max(2))),
        Err(e) if super::output::is_broken_pipe(&e) => Ok(()),
        Err(e) => {
            note!("{:?}", miette::Report::new(e));
            Err(CliError::Reported(2))
        }
    }
}

fn run(global: &Global, args: &Args) -> CliResult<CheckReport> {
    let store = global.open_store()?;
    let targets = args
        .targets
        .iter()
        .map(|t| deriver_of_output(&store, t))
        .collect::<CliResult<Vec<_>>>()?;
    let (mut drvs, config) = resolve_targets(&store, &targets, &warn_untrusted)?;
    if args.deep {
        drvs = deep_targets(&store, &drvs).map_err(|e| CliError::Usage {
            message: e.to_string(),
            help: None,
        })?;
    }
    let caches = cache_ops::for_build(config.as_ref(), &args.build.cache_request())?;
    let fetcher = args.build.sources().fetcher(config.as_ref());
    let against = cache_ops::open_all(
        &args
            .against
            .iter()
            .map(|url| cache_ops::CacheSpec {
                url: url.clone(),
                priority: cache_ops::CLI_PRIORITY,
                keys: Vec::new(),
            })
            .collect::<Vec<_>>(),
    )?;
    // An interrupt now stops the rebuilds cleanly rather than buildit itself.
    global.cancel.arm();
    let reporter = Reporter::new(ReporterOptions {
        print_logs: args.build.print_build_logs(),
        quiet: false,
    });
    let checker = Checker {
        store: &store,
        fetcher: &fetcher,
        caches: &caches,
        options: args.build.options(false, &global.cancel),
        progress: &reporter,
        diff: DiffOptions {
            nar_modes: true,
            ..DiffOptions::default()
        },
    };
    let result = checker.check(&drvs, args.rounds);
    reporter.finish();
    let mut report = match result {
        Ok(r) => r,
        Err(CheckError::Incomplete { what, report }) => {
            summarise(&report, args.build.keep_going())?;
            let code = if report.interrupted { 130 } else { 2 };
            note!("error: {what} did not finish, so nothing can be said");
            return Err(CliError::Reported(code));
        }
        Err(e) => {
            return Err(CliError::Usage {
                message: e.to_string(),
                help: None,
            })
        }
    };
    if !against.is_empty() {
        let outs: Vec<_> = outputs(&store, &drvs)?
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        report.challenges = checker
            .challenge(&against, &outs)
            .map_err(|e| CliError::Usage {
                message: e.to_string(),
                help: None,
            })?;
    }
    Ok(report)
}

/// An output path (or a `result` link) stands for the derivation that built it.
fn deriver_of_output(store: &buildit_store::LocalStore, arg: &str) -> CliResult<String> {
    let Ok((path, _)) = store.resolve(arg) else {
        return Ok(arg.to_string());
    };
    if path.is_derivation() {
        return Ok(arg.to_string());
    }
    match store.path_info(&path)?.and_then(|i| i.deriver) {
        Some(d) if store.is_valid(&d)? => Ok(d.to_string()),
        _ => Err(CliError::usage(
            format!("{path} has no known derivation to rebuild it from"),
            Some("check a .drv or a spec directory"),
        )),
    }
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}\n"))
        .collect::<String>()
}

fn render(report: &CheckReport, json: bool) -> CliResult<()> {
    if json {
        return print_json(&serde_json::to_value(report).map_err(std::io::Error::other)?);
    }
    let mut out = std::io::stdout().lock();
    for o in &report.outputs {
        if o.reproducible {
            writeln!(
                out,
                "{}: reproducible ({} rebuild{}: {})",
                o.name,
                o.rounds.len(),
                if o.rounds.len() == 1 { "" } else { "s" },
                o.rounds
                    .iter()
                    .map(|r| r.variation.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )?;
            continue;
        }
        writeln!(out, "{}: NOT reproducible", o.name)?;
        writeln!(out, "  output {} ({})", o.output, o.nar_hash)?;
        for r in &o.rounds {
            let verdict = if r.matches { "same" } else { "differs" };
            writeln!(
                out,
                "  round {} ({}): {verdict}, {}",
                r.round, r.variation, r.nar_hash
            )?;
            if let Some(k) = &r.kept {
                writeln!(out, "    rebuild kept at {}", k.display())?;
            }
        }
        if let Some(d) = &o.diff {
            writeln!(out, "  how the first differing rebuild differs:")?;
            write!(out, "{}", indent(&d.to_string(), "    "))?;
        }
    }
    for c in &report.challenges {
        match c.verdict {
            "differs" => {
                writeln!(
                    out,
                    "{}: {} holds a DIFFERENT build ({})",
                    c.output,
                    c.cache,
                    c.cache_nar_hash.as_deref().unwrap_or("?")
                )?;
                if let Some(d) = &c.diff {
                    write!(out, "{}", indent(&d.to_string(), "    "))?;
                }
            }
            "same" => writeln!(out, "{}: {} holds the same build", c.output, c.cache)?,
            _ => writeln!(out, "{}: {} does not have it", c.output, c.cache)?,
        }
    }
    let bad = report.outputs.iter().filter(|o| !o.reproducible).count();
    writeln!(
        std::io::stderr(),
        "{} output{} checked: {} reproducible, {} not",
        report.outputs.len(),
        if report.outputs.len() == 1 { "" } else { "s" },
        report.outputs.len() - bad,
        bad
    )?;
    Ok(())
}

//! `buildit eval DIR [--json]`: check the spec, lower it to derivations and write
//! them into the store; nothing is built or fetched.

use std::io::Write;
use std::path::PathBuf;

use buildit_lang::model::container::ImageFormat;
use buildit_lang::model::Step;
use serde_json::json;

use super::output::{print_json, warn_untrusted};
use super::{CliResult, Global};
use crate::ops::load;

#[derive(clap::Args)]
pub struct Args {
    /// Print the whole plan as JSON.
    #[arg(long)]
    json: bool,
    /// The spec directory (holding container.yaml).
    dir: PathBuf,
}

pub fn exec(global: &Global, args: Args) -> CliResult<()> {
    let loaded = load::load(&args.dir, &warn_untrusted)?;
    let store = global.open_store()?;
    let plan = load::eval(&loaded, &store)?;
    // One planned image per image step, in order.
    let images: Vec<_> = loaded
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Image(i) => Some(i),
            _ => None,
        })
        .zip(&plan.images)
        .map(|(i, planned)| json!({
            "type": match i.format { ImageFormat::Aci => "aci", ImageFormat::Oci => "oci" },
            "name": i.name.as_ref().map(|n| n.value.clone())
                .or_else(|| i.manifest.as_ref().and_then(|m| m["name"].as_str().map(String::from))),
            "manifest": i.manifest,
            "drv": planned.drv.to_string(),
            "out": planned.out.to_string(),
        }))
        .collect();
    let syncs: Vec<_> = loaded
        .syncs()
        .map(|s| {
            json!({
                "src": s.src.display().to_string(),
                "dest": s.dest.value,
                "recursive": s.recursive,
                "chmod": s.chmod.as_ref().map(|c| format!("{:04o}", c.value)),
            })
        })
        .collect();
    let packages: Vec<_> = plan
        .packages
        .iter()
        .map(|p| {
            json!({
                "key": p.key,
                "recipe": p.id.to_string(),
                "name": p.id.name,
                "version": p.version,
                "options": p.options,
                "drv": p.drv.to_string(),
                "out": p.out.to_string(),
                "direct": p.direct,
            })
        })
        .collect();
    if args.json {
        return print_json(&json!({
            "dir": loaded.dir.display().to_string(),
            "vars": loaded.vars,
            "packages": packages,
            "build-roots": plan.build_roots.iter().map(|(n, d)| (n.clone(), d.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "syncs": syncs,
            "images": images,
            "derivations": plan.set.len(),
        }));
    }
    let mut out = std::io::stdout().lock();
    for p in plan.packages.iter().filter(|p| p.direct) {
        writeln!(
            out,
            "package {} {} [{}] ({})\n  {}",
            p.id.name,
            p.version,
            p.options.join(" "),
            p.key,
            p.drv
        )?;
    }
    for p in plan.packages.iter().filter(|p| !p.direct) {
        writeln!(out, "dependency {}\n  {}", p.id, p.drv)?;
    }
    for i in &images {
        writeln!(
            out,
            "image {} {}",
            i["type"].as_str().unwrap_or("?"),
            i["name"].as_str().unwrap_or("(unnamed)")
        )?;
    }
    writeln!(out, "{} derivations", plan.set.len())?;
    Ok(())
}

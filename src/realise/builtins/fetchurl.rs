//! `builtin:fetchurl`: the download, or in a check the registered content hashed
//! again (the declared hash already pins it; refetching could only agree or fail).

use buildit_store::builtins::FetchUrl;
use buildit_store::{Derivation, HashAlgo, StorePath};

use super::Builtin;
use crate::realise::events::Event;
use crate::realise::sandboxed::{Built, Compared};
use crate::realise::{BuildError, Realiser};

impl Builtin for FetchUrl {
    fn build(
        &self,
        r: &Realiser<'_>,
        drv_path: &StorePath,
        drv: &Derivation,
        check: bool,
    ) -> Result<Built, BuildError> {
        if check {
            return check_fetch(r, drv);
        }
        r.fetcher.fetch_reporting(r.store, drv, &|done, total| {
            r.progress.event(Event::Download {
                drv: drv_path,
                done,
                total,
            })
        })?;
        Ok(Built::Registered)
    }
}

fn check_fetch(r: &Realiser<'_>, drv: &Derivation) -> Result<Built, BuildError> {
    let mut out = Vec::new();
    for o in drv.outputs.values() {
        if let Some(p) = o.path() {
            let expected = r.store.require_info(p)?.nar_hash;
            let (actual, _) =
                buildit_store::nar::hash_path(&r.store.physical_path(p), HashAlgo::Sha256)?;
            out.push(Compared {
                output: p.clone(),
                expected,
                actual,
                rebuilt: None,
            });
        }
    }
    Ok(Built::Checked(out))
}

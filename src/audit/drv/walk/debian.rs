//! Debian trees and build roots.

use super::*;

impl Walker<'_> {
    pub(super) fn unpack(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        cx.handle(&[ck::NAME, uk::DEB]);
        let fetch = |w: &mut Self, d: &Derivation| -> Result<Option<StorePath>, DrvDiffError> {
            for p in d.input_drvs.keys() {
                if kind(&*w.load(p)?) == Kind::Fetch {
                    return Ok(Some(p.clone()));
                }
            }
            Ok(None)
        };
        let (Some(fa), Some(fb)) = (fetch(self, da)?, fetch(self, db)?) else {
            return Ok(());
        };
        cx.claimed.insert(fa.clone());
        cx.claimed.insert(fb.clone());
        if fa == fb {
            return self.mark_unchanged(&fa);
        }
        let (ua, ha) = self.fetch_info(&fa)?;
        let (ub, hb) = self.fetch_info(&fb)?;
        cx.own.push(Reason::DebianPackageChanged {
            package: env(db, uk::PACKAGE).to_string(),
            old_version: deb_version(&ua, da),
            new_version: deb_version(&ub, db),
            old_sha256: ha,
            new_sha256: hb,
        });
        Ok(())
    }

    pub(super) fn build_root(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        name: &str,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        cx.handle(&[bk::MEMBERS, bk::FIXUPS]);
        let outs_a = self.input_outputs(da)?;
        let outs_b = self.input_outputs(db)?;
        let p = self.pair(
            &traced(env(da, bk::MEMBERS), &outs_a),
            &traced(env(db, bk::MEMBERS), &outs_b),
        )?;
        for (x, y) in &p.both {
            self.child(x, y, cx)?;
        }
        for x in &p.only_a {
            cx.claimed.insert(x.clone());
            cx.own.push(Reason::BuildRootLost {
                build_root: name.to_string(),
                package: label(&*self.load(x)?, x),
            });
        }
        for y in &p.only_b {
            cx.claimed.insert(y.clone());
            cx.own.push(Reason::BuildRootGained {
                build_root: name.to_string(),
                package: label(&*self.load(y)?, y),
            });
        }
        let (xa, xb) = (env(da, bk::FIXUPS), env(db, bk::FIXUPS));
        if xa != xb {
            let mut changed = Vec::new();
            match (
                serde_json::from_str::<Value>(xa),
                serde_json::from_str::<Value>(xb),
            ) {
                (Ok(a), Ok(b)) => {
                    let mut out = Vec::new();
                    json_changes(&a, &b, "", &mut out);
                    changed.extend(out.into_iter().map(|(path, _, _)| path));
                }
                _ => changed.push(bk::FIXUPS.to_string()),
            }
            cx.own.push(Reason::BuildRootFixupsChanged {
                build_root: name.to_string(),
                changed,
            });
        }
        Ok(())
    }
}

/// A Debian version from the `.deb`'s pool file name (`name_version_arch.deb`),
/// else from the unpack derivation's name (`package-version`).
pub(super) fn deb_version(url: &str, unpack: &Derivation) -> String {
    let file = url.rsplit('/').next().unwrap_or(url);
    let mut parts = file.split('_');
    if let (Some(_), Some(v), Some(_)) = (parts.next(), parts.next(), parts.next()) {
        return v.to_string();
    }
    let n = env(unpack, ck::NAME);
    n.strip_prefix(&format!("{}-", env(unpack, uk::PACKAGE)))
        .unwrap_or(n)
        .to_string()
}

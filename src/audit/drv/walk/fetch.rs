//! Fixed-output downloads.

use super::*;

impl Walker<'_> {
    /// URL and sha256 of a fetch derivation.
    pub(super) fn fetch_info(&mut self, p: &StorePath) -> Result<(String, String), DrvDiffError> {
        let d = self.load(p)?;
        let sha = match d.env.get(fk::OUTPUT_HASH) {
            Some(h) => h.clone(),
            None => d
                .outputs
                .get(OUT)
                .map(|o| o.hash_field())
                .unwrap_or_default(),
        };
        Ok((env(&d, fk::URLS).to_string(), sha))
    }

    /// A fetch met on its own (not through a role that names it better).
    pub(super) fn fetch(&mut self, da: &Derivation, db: &Derivation, name: &str, cx: &mut Cx) {
        cx.handle(&[
            ck::NAME,
            fk::URLS,
            fk::OUTPUT_HASH,
            fk::OUTPUT_HASH_ALGO,
            fk::OUTPUT_HASH_MODE,
        ]);
        let (ua, ub) = (env(da, fk::URLS), env(db, fk::URLS));
        let hash = |d: &Derivation| {
            d.outputs
                .get(OUT)
                .map(|o| o.hash_field())
                .unwrap_or_default()
        };
        let (ha, hb) = (hash(da), hash(db));
        if ua != ub || ha != hb || env(da, fk::OUTPUT_HASH_MODE) != env(db, fk::OUTPUT_HASH_MODE) {
            cx.own.push(Reason::SourceChanged {
                package: name.to_string(),
                url_old: ua.to_string(),
                url_new: ub.to_string(),
                sha256_old: ha,
                sha256_new: hb,
            });
        }
    }
}

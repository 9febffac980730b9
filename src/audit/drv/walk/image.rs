//! Images: their packages, synced files and settings.

use super::*;

impl Walker<'_> {
    /// Both files' text, if both are regular files in the store.
    /// A sync whose `src` moved from one store file to another: its contents
    /// changed, shown as a short diff when both are text.
    pub(super) fn sync_file(
        &self,
        image: &str,
        dest: &str,
        key: &str,
        old: &Option<String>,
        new: &Option<String>,
    ) -> Option<Reason> {
        if key != "src" {
            return None;
        }
        let path = |v: &Option<String>| StorePath::from_absolute(v.as_deref()?).ok();
        let (a, b) = (path(old)?, path(new)?);
        let diff = self
            .read_pair(&a, &b)
            .filter(|(x, y)| !x.contains('\0') && !y.contains('\0'))
            .map(|(x, y)| short_diff(&x, &y));
        Some(Reason::SyncFileChanged {
            image: image.to_string(),
            dest: dest.to_string(),
            old: a.to_string(),
            new: b.to_string(),
            diff,
        })
    }

    pub(super) fn image(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        name: &str,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        // Every variable of an image is a field of it; `name` follows the title.
        cx.handle(&[ck::NAME, ik::PACKAGES, ik::SYNCS]);
        let outs_a = self.input_outputs(da)?;
        let outs_b = self.input_outputs(db)?;
        let p = self.pair(
            &traced(env(da, ik::PACKAGES), &outs_a),
            &traced(env(db, ik::PACKAGES), &outs_b),
        )?;
        for (x, y) in &p.both {
            self.child(x, y, cx)?;
        }
        let change =
            |field: String, old: Option<String>, new: Option<String>| Reason::ImageChanged {
                image: name.to_string(),
                field,
                old,
                new,
            };
        for x in &p.only_a {
            cx.claimed.insert(x.clone());
            cx.own
                .push(change(ik::PACKAGES.into(), Some(drv_name(x)), None));
        }
        for y in &p.only_b {
            cx.claimed.insert(y.clone());
            cx.own
                .push(change(ik::PACKAGES.into(), None, Some(drv_name(y))));
        }
        // Syncs by destination; a source with another store hash has other contents.
        let syncs = |d: &Derivation| -> Option<BTreeMap<String, serde_json::Map<String, Value>>> {
            let v: Vec<Value> = serde_json::from_str(env(d, ik::SYNCS)).ok()?;
            v.into_iter()
                .map(|e| {
                    let m = e.as_object()?.clone();
                    Some((m.get("dest")?.as_str()?.to_string(), m))
                })
                .collect()
        };
        for d in [da, db] {
            for s in &d.input_srcs {
                if env(d, ik::SYNCS).contains(&s.to_absolute()) {
                    cx.claimed.insert(s.clone());
                }
            }
        }
        match (syncs(da), syncs(db)) {
            (Some(sa), Some(sb)) => {
                for (dest, ea) in &sa {
                    let field = format!("sync {dest}");
                    match sb.get(dest) {
                        None => cx.own.push(change(field, Some(sync_summary(ea)), None)),
                        Some(eb) => {
                            let mut out = Vec::new();
                            json_changes(
                                &Value::Object(ea.clone()),
                                &Value::Object(eb.clone()),
                                "",
                                &mut out,
                            );
                            for (k, o, n) in out {
                                if let Some(r) = self.sync_file(name, dest, &k, &o, &n) {
                                    cx.own.push(r);
                                    continue;
                                }
                                cx.own.push(change(format!("{field} {k}"), o, n));
                            }
                        }
                    }
                }
                for (dest, eb) in &sb {
                    if !sa.contains_key(dest) {
                        cx.own
                            .push(change(format!("sync {dest}"), None, Some(sync_summary(eb))));
                    }
                }
            }
            _ => {
                if env(da, ik::SYNCS) != env(db, ik::SYNCS) {
                    cx.own.push(change(
                        ik::SYNCS.into(),
                        Some(env(da, ik::SYNCS).into()),
                        Some(env(db, ik::SYNCS).into()),
                    ));
                }
            }
        }
        let keys: BTreeSet<&String> = da.env.keys().chain(db.env.keys()).collect();
        for k in keys {
            if cx.handled.contains(k.as_str()) {
                continue;
            }
            let (va, vb) = (da.env.get(k), db.env.get(k));
            if va == vb {
                continue;
            }
            // JSON fields (base, config, an ACI manifest) by the paths that differ.
            let parse = |v: Option<&String>| v.and_then(|s| serde_json::from_str::<Value>(s).ok());
            match (parse(va), parse(vb)) {
                (Some(ja @ Value::Object(_)), Some(jb @ Value::Object(_))) => {
                    let mut out = Vec::new();
                    json_changes(&ja, &jb, k, &mut out);
                    for (path, o, n) in out {
                        cx.own.push(change(path, o, n));
                    }
                }
                _ => cx.own.push(change(k.clone(), va.cloned(), vb.cloned())),
            }
        }
        cx.handled
            .extend(da.env.keys().chain(db.env.keys()).cloned());
        Ok(())
    }
}

/// A sync entry in a few words.
pub(super) fn sync_summary(e: &serde_json::Map<String, Value>) -> String {
    let s = |k: &str| e.get(k).map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{} (mode {}, owner {}:{})",
        e.get("src").and_then(|v| v.as_str()).unwrap_or(""),
        s("mode"),
        s("uid"),
        s("gid")
    )
}

//! Package builds: version, sources, patches, options, phases, build and runtime
//! dependencies.

use super::*;

/// An option turned on or off, with what is attributed to it.
struct OptionChange {
    option: String,
    on: bool,
    flags_added: Vec<String>,
    flags_removed: Vec<String>,
    env: Vec<String>,
}

impl Walker<'_> {
    pub(super) fn build(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        name: &str,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        cx.handle(&[ck::NAME, pk::PNAME, pk::VERSION, pk::SRC, pk::PATCHES]);
        cx.handle(&[
            pk::BUILD_OPTIONS,
            pk::CONFIGURE_FLAGS,
            pk::BUILD_ROOT,
            pk::RUNTIME_DEPS,
        ]);
        let outs_a = self.input_outputs(da)?;
        let outs_b = self.input_outputs(db)?;
        if env(da, pk::VERSION) != env(db, pk::VERSION) {
            cx.own.push(Reason::VersionChanged {
                package: name.to_string(),
                old: env(da, pk::VERSION).to_string(),
                new: env(db, pk::VERSION).to_string(),
            });
        }
        self.sources(da, db, &outs_a, &outs_b, name, cx)?;
        self.patches(da, db, &outs_a, &outs_b, name, cx)?;
        self.options(da, db, name, cx);
        for (k, old) in &da.env {
            if let Some(phase) = k.strip_suffix(pk::PHASE_SUFFIX) {
                cx.handled.insert(k.clone());
                let new = db.env.get(k).map(String::as_str).unwrap_or("");
                if old != new {
                    cx.own.push(Reason::PhaseChanged {
                        package: name.to_string(),
                        phase: phase.to_string(),
                        diff: short_diff(old, new),
                    });
                }
            }
        }
        for (k, new) in &db.env {
            if let Some(phase) = k.strip_suffix(pk::PHASE_SUFFIX) {
                if !da.env.contains_key(k) {
                    cx.handled.insert(k.clone());
                    cx.own.push(Reason::PhaseChanged {
                        package: name.to_string(),
                        phase: phase.to_string(),
                        diff: short_diff("", new),
                    });
                }
            }
        }
        for var in [pk::BUILD_ROOT, pk::RUNTIME_DEPS] {
            let la = traced(env(da, var), &outs_a);
            let lb = traced(env(db, var), &outs_b);
            let p = self.pair(&la, &lb)?;
            for (x, y) in &p.both {
                self.child(x, y, cx)?;
            }
            if p.only_a.is_empty() && p.only_b.is_empty() {
                continue;
            }
            let mut removed = Vec::new();
            for x in &p.only_a {
                cx.claimed.insert(x.clone());
                removed.push(label(&*self.load(x)?, x));
            }
            let mut added = Vec::new();
            for y in &p.only_b {
                cx.claimed.insert(y.clone());
                added.push(label(&*self.load(y)?, y));
            }
            let package = name.to_string();
            cx.own.push(if var == pk::BUILD_ROOT {
                Reason::BuildDependsChanged {
                    package,
                    added,
                    removed,
                }
            } else {
                Reason::RuntimeDependsChanged {
                    package,
                    added,
                    removed,
                }
            });
        }
        Ok(())
    }

    /// Sources pair by position: a new version of a tarball has a new name.
    pub(super) fn sources(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        outs_a: &BTreeMap<String, StorePath>,
        outs_b: &BTreeMap<String, StorePath>,
        name: &str,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        let (sa, sb) = (words(env(da, pk::SRC)), words(env(db, pk::SRC)));
        let info = |w: &mut Self, s: &str, outs: &BTreeMap<String, StorePath>, cx: &mut Cx| {
            match outs.get(s) {
                Some(f) => {
                    cx.claimed.insert(f.clone());
                    w.fetch_info(f).map(|i| (Some(f.clone()), i))
                }
                // Not an input's output (hand-written): the path is all there is.
                None => Ok((None, (s.to_string(), String::new()))),
            }
        };
        for i in 0..sa.len().max(sb.len()) {
            let a = match sa.get(i) {
                Some(s) => Some(info(self, s, outs_a, cx)?),
                None => None,
            };
            let b = match sb.get(i) {
                Some(s) => Some(info(self, s, outs_b, cx)?),
                None => None,
            };
            let package = name.to_string();
            match (a, b) {
                (Some((fa, (ua, ha))), Some((fb, (ub, hb)))) => {
                    if let (Some(f), true) = (&fa, fa == fb) {
                        self.mark_unchanged(f)?;
                    } else if (ua.as_str(), ha.as_str()) != (ub.as_str(), hb.as_str()) {
                        cx.own.push(Reason::SourceChanged {
                            package,
                            url_old: ua,
                            url_new: ub,
                            sha256_old: ha,
                            sha256_new: hb,
                        });
                    } else if fa != fb {
                        // Same URL and hash, another derivation (a renamed file).
                        cx.own.push(Reason::Other {
                            drv: package,
                            detail: format!("the fetch of source {ua} changed"),
                        });
                    }
                }
                (Some((_, (url, sha256))), None) => cx.own.push(Reason::SourceRemoved {
                    package,
                    url,
                    sha256,
                }),
                (None, Some((_, (url, sha256)))) => cx.own.push(Reason::SourceAdded {
                    package,
                    url,
                    sha256,
                }),
                (None, None) => {}
            }
        }
        Ok(())
    }

    /// Patches pair by file name; a local one is named by its store hash, a remote
    /// one by its pinned sha256.
    pub(super) fn patches(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        outs_a: &BTreeMap<String, StorePath>,
        outs_b: &BTreeMap<String, StorePath>,
        name: &str,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        struct PatchRef {
            key: String,
            file: String,
            hash: String,
            path: Option<StorePath>,
            fetch: Option<StorePath>,
        }
        let refs =
            |w: &mut Self, d: &Derivation, outs: &BTreeMap<String, StorePath>, cx: &mut Cx| {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let mut out = Vec::new();
                for word in words(env(d, pk::PATCHES)) {
                    let path = StorePath::from_absolute(word).ok();
                    let file = path
                        .as_ref()
                        .map(|p| p.name().to_string())
                        .unwrap_or_else(|| word.to_string());
                    let (hash, fetch) = match (outs.get(word), &path) {
                        (Some(f), _) => {
                            cx.claimed.insert(f.clone());
                            (w.fetch_info(f)?.1, Some(f.clone()))
                        }
                        (None, Some(p)) => {
                            cx.claimed.insert(p.clone());
                            (p.hash_part().to_string(), None)
                        }
                        (None, None) => (word.to_string(), None),
                    };
                    let n = seen.entry(file.clone()).or_default();
                    let key = if *n == 0 {
                        file.clone()
                    } else {
                        format!("{file}#{n}")
                    };
                    *n += 1;
                    out.push(PatchRef {
                        key,
                        file,
                        hash,
                        path,
                        fetch,
                    });
                }
                Ok::<_, DrvDiffError>(out)
            };
        let pa = refs(self, da, outs_a, cx)?;
        let pb = refs(self, db, outs_b, cx)?;
        let package = name.to_string();
        for a in &pa {
            match pb.iter().find(|b| b.key == a.key) {
                Some(b) if a.hash != b.hash => {
                    let lines = match (&a.path, &b.path) {
                        (Some(x), Some(y)) => {
                            self.read_pair(x, y).map(|(x, y)| line_counts(&x, &y))
                        }
                        _ => None,
                    };
                    cx.own.push(Reason::PatchChanged {
                        package: package.clone(),
                        patch: a.file.clone(),
                        old: a.hash.clone(),
                        new: b.hash.clone(),
                        lines,
                    });
                }
                Some(b) => {
                    if let (Some(x), Some(y)) = (&a.fetch, &b.fetch) {
                        if x == y {
                            self.mark_unchanged(x)?;
                        }
                    }
                }
                None => cx.own.push(Reason::PatchRemoved {
                    package: package.clone(),
                    patch: a.file.clone(),
                }),
            }
        }
        for b in &pb {
            if !pa.iter().any(|a| a.key == b.key) {
                cx.own.push(Reason::PatchAdded {
                    package: package.clone(),
                    patch: b.file.clone(),
                });
            }
        }
        // The order matters to `patch`: the patches on both sides, in each order.
        let common_a: Vec<&str> = pa
            .iter()
            .filter(|a| pb.iter().any(|b| b.key == a.key))
            .map(|a| a.key.as_str())
            .collect();
        let common_b: Vec<&str> = pb
            .iter()
            .filter(|b| pa.iter().any(|a| a.key == b.key))
            .map(|b| b.key.as_str())
            .collect();
        if common_a != common_b {
            cx.own.push(Reason::PatchesReordered {
                package,
                old: common_a.iter().map(|s| s.to_string()).collect(),
                new: common_b.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(())
    }

    /// Options turned on or off, with the configure flags and recipe variables that
    /// came with them; flag changes without option changes on their own.
    pub(super) fn options(&mut self, da: &Derivation, db: &Derivation, name: &str, cx: &mut Cx) {
        let oa: BTreeSet<&str> = words(env(da, pk::BUILD_OPTIONS)).into_iter().collect();
        let ob: BTreeSet<&str> = words(env(db, pk::BUILD_OPTIONS)).into_iter().collect();
        let (fa, fb) = (
            words(env(da, pk::CONFIGURE_FLAGS)),
            words(env(db, pk::CONFIGURE_FLAGS)),
        );
        let added: Vec<String> = fb
            .iter()
            .filter(|f| !fa.contains(f))
            .map(|f| f.to_string())
            .collect();
        let removed: Vec<String> = fa
            .iter()
            .filter(|f| !fb.contains(f))
            .map(|f| f.to_string())
            .collect();
        let change = |o: &&str, on| OptionChange {
            option: o.to_string(),
            on,
            flags_added: vec![],
            flags_removed: vec![],
            env: vec![],
        };
        let mut opts: Vec<OptionChange> = ob
            .difference(&oa)
            .map(|o| change(o, true))
            .chain(oa.difference(&ob).map(|o| change(o, false)))
            .collect();
        if opts.is_empty() {
            if !added.is_empty() || !removed.is_empty() {
                cx.own.push(Reason::ConfigureFlagsChanged {
                    package: name.to_string(),
                    added,
                    removed,
                });
            } else if fa != fb {
                // Same flags in another order: still a different configure line.
                cx.handled.remove(pk::CONFIGURE_FLAGS);
            }
            return;
        }
        // Which option a flag or variable belongs to cannot be read from the
        // derivation: guess by name (`ssl` in `--with-http_ssl_module`), else give it
        // to the first option turned the same way.
        fn norm(s: &str) -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase()
        }
        let owner = |opts: &[OptionChange], what: &str, on: bool| -> usize {
            let w = norm(what);
            opts.iter()
                .position(|o| o.on == on && w.contains(&norm(&o.option)))
                .or_else(|| opts.iter().position(|o| o.on == on))
                .unwrap_or(0)
        };
        for f in added {
            let i = owner(&opts, &f, true);
            opts[i].flags_added.push(f);
        }
        for f in removed {
            let i = owner(&opts, &f, false);
            opts[i].flags_removed.push(f);
        }
        // Recipe variables set on one side only come from options (`env:` of an
        // option); variables whose value changed are reported on their own.
        let special = |k: &str| {
            k.ends_with(pk::PHASE_SUFFIX)
                || [
                    ck::NAME,
                    pk::PNAME,
                    pk::VERSION,
                    ck::BUILDER,
                    ck::SYSTEM,
                    pk::SRC,
                    pk::PATCHES,
                    pk::BUILD_OPTIONS,
                    pk::CONFIGURE_FLAGS,
                    pk::BUILD_ROOT,
                    pk::RUNTIME_DEPS,
                ]
                .contains(&k)
        };
        for (k, v) in &db.env {
            if !special(k) && !da.env.contains_key(k) {
                let i = owner(&opts, k, true);
                opts[i].env.push(format!("+{k}={v}"));
                cx.handled.insert(k.clone());
            }
        }
        for k in da.env.keys() {
            if !special(k) && !db.env.contains_key(k) {
                let i = owner(&opts, k, false);
                opts[i].env.push(format!("-{k}"));
                cx.handled.insert(k.clone());
            }
        }
        for OptionChange {
            option,
            on,
            flags_added,
            flags_removed,
            env,
        } in opts
        {
            let package = name.to_string();
            cx.own.push(if on {
                Reason::OptionOn {
                    package,
                    option,
                    flags_added,
                    flags_removed,
                    env,
                }
            } else {
                Reason::OptionOff {
                    package,
                    option,
                    flags_added,
                    flags_removed,
                    env,
                }
            });
        }
    }
}

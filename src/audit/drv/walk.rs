//! Walking two derivation graphs together. Derivations are paired by what they are
//! (a package by `pname`, a Debian tree by `package`, a build root by name, an image
//! by title and format, a fetch by its role in the derivation that uses it), so that
//! a changed path is compared with its counterpart rather than with a stranger. A
//! pair with the same path is unchanged below; a differing pair is explained by its
//! own attributes (a cause) or only by its inputs (a consequence).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use buildit_store::builtins::build_root::keys as bk;
use buildit_store::builtins::fetchurl::keys as fk;
use buildit_store::builtins::image::keys as ik;
use buildit_store::builtins::package::keys as pk;
use buildit_store::builtins::unpack_deb::keys as uk;
use buildit_store::builtins::{self, keys as ck, OUT};
use buildit_store::{Derivation, LocalStore, StorePath};
use serde_json::Value;

use super::reason::Reason;
use super::render::{json_changes, line_counts, mask_store_hashes, short_diff};
use super::{Consequence, DrvDiffError};

/// What buildit made a derivation for, from its builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fetch,
    Unpack,
    BuildRoot,
    Image,
    /// A package built from source (`/bin/bash` with a `pname`).
    Build,
    Unknown,
}

fn kind(d: &Derivation) -> Kind {
    match builtins::Kind::of(d) {
        builtins::Kind::FetchUrl => Kind::Fetch,
        builtins::Kind::UnpackDeb => Kind::Unpack,
        builtins::Kind::BuildRoot => Kind::BuildRoot,
        builtins::Kind::Image => Kind::Image,
        builtins::Kind::Package => Kind::Build,
        builtins::Kind::UnknownBuiltin | builtins::Kind::Plain => Kind::Unknown,
    }
}

fn env<'d>(d: &'d Derivation, k: &str) -> &'d str {
    d.env.get(k).map(String::as_str).unwrap_or("")
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// A `.drv`'s name without `.drv`.
pub(super) fn drv_name(p: &StorePath) -> String {
    let n = p.name();
    n.strip_suffix(".drv").unwrap_or(n).to_string()
}

/// What a derivation is, independent of its inputs: the key that pairs it.
fn identity(d: &Derivation, p: &StorePath) -> String {
    match kind(d) {
        Kind::Fetch => format!("fetch:{}", drv_name(p)),
        Kind::Unpack => format!("deb:{}", env(d, uk::PACKAGE)),
        Kind::BuildRoot => format!("buildroot:{}", drv_name(p)),
        Kind::Image => format!("image:{}:{}", env(d, ik::TITLE), env(d, ik::FORMAT)),
        Kind::Build => format!("build:{}", env(d, pk::PNAME)),
        Kind::Unknown => format!("drv:{}", drv_name(p)),
    }
}

/// Derivations left unpaired by identity are paired within this group when exactly
/// one of it is left on each side: the same thing renamed (an image whose container
/// version changed, a package's build root switched).
fn group(d: &Derivation) -> String {
    match kind(d) {
        Kind::Image => format!("image:{}", env(d, ik::FORMAT)),
        k => format!("{k:?}"),
    }
}

/// How a derivation is named in a reason.
fn label(d: &Derivation, p: &StorePath) -> String {
    match kind(d) {
        Kind::Build => env(d, pk::PNAME).to_string(),
        Kind::Unpack => env(d, uk::PACKAGE).to_string(),
        Kind::BuildRoot => {
            let n = drv_name(p);
            n.strip_prefix("buildroot-").unwrap_or(&n).to_string()
        }
        Kind::Image => format!("{} ({})", env(d, ik::TITLE), env(d, ik::FORMAT)),
        Kind::Fetch | Kind::Unknown => drv_name(p),
    }
}

/// An option turned on or off, with what is attributed to it.
struct OptionChange {
    option: String,
    on: bool,
    flags_added: Vec<String>,
    flags_removed: Vec<String>,
    env: Vec<String>,
}

/// Inputs paired between the two sides.
#[derive(Default)]
struct Pairing {
    both: Vec<(StorePath, StorePath)>,
    only_a: Vec<StorePath>,
    only_b: Vec<StorePath>,
}

/// What one pair's comparison found.
#[derive(Default)]
struct Cx {
    own: Vec<Reason>,
    /// Names of inputs that changed (the new side's).
    changed_inputs: Vec<String>,
    /// Inputs (drvs and sources) already explained by a role; the rest are compared
    /// generically.
    claimed: BTreeSet<StorePath>,
    /// Env vars already explained.
    handled: BTreeSet<String>,
}

impl Cx {
    fn handle(&mut self, keys: &[&str]) {
        self.handled.extend(keys.iter().map(|k| k.to_string()));
    }

    fn input_changed(&mut self, name: String) {
        if !self.changed_inputs.contains(&name) {
            self.changed_inputs.push(name);
        }
    }
}

pub(super) struct Walker<'s> {
    store: &'s LocalStore,
    drvs: HashMap<StorePath, Rc<Derivation>>,
    visited: BTreeSet<(StorePath, StorePath)>,
    pub causes: Vec<Reason>,
    pub consequences: Vec<Consequence>,
    pub unchanged: BTreeSet<StorePath>,
}

impl<'s> Walker<'s> {
    pub fn new(store: &'s LocalStore) -> Self {
        Walker {
            store,
            drvs: HashMap::new(),
            visited: BTreeSet::new(),
            causes: Vec::new(),
            consequences: Vec::new(),
            unchanged: BTreeSet::new(),
        }
    }

    fn load(&mut self, p: &StorePath) -> Result<Rc<Derivation>, DrvDiffError> {
        if let Some(d) = self.drvs.get(p) {
            return Ok(d.clone());
        }
        let d = Rc::new(
            self.store
                .read_derivation(p)
                .map_err(|source| DrvDiffError::Read {
                    path: p.clone(),
                    source,
                })?,
        );
        self.drvs.insert(p.clone(), d.clone());
        Ok(d)
    }

    fn add_cause(&mut self, r: Reason) {
        // One Debian package in two build roots, or a package reached twice, is one
        // cause.
        if !self.causes.contains(&r) {
            self.causes.push(r);
        }
    }

    /// Count `p` and everything below it as unchanged.
    fn mark_unchanged(&mut self, p: &StorePath) -> Result<(), DrvDiffError> {
        let mut todo = vec![p.clone()];
        while let Some(p) = todo.pop() {
            if !self.unchanged.insert(p.clone()) {
                continue;
            }
            let d = self.load(&p)?;
            todo.extend(d.input_drvs.keys().cloned());
        }
        Ok(())
    }

    /// Absolute output path → the input `.drv` that makes it, for the outputs `d`
    /// uses: how env values are traced back to inputs.
    fn input_outputs(
        &mut self,
        d: &Derivation,
    ) -> Result<BTreeMap<String, StorePath>, DrvDiffError> {
        let mut m = BTreeMap::new();
        for (drv, outs) in &d.input_drvs {
            let input = self.load(drv)?;
            for o in outs {
                if let Some(path) = input.outputs.get(o).and_then(|x| x.path()) {
                    m.insert(path.to_absolute(), drv.clone());
                }
            }
        }
        Ok(m)
    }

    /// Pair two lists of `.drv`s by identity, then by group.
    fn pair(&mut self, a: &[StorePath], b: &[StorePath]) -> Result<Pairing, DrvDiffError> {
        let keyed =
            |w: &mut Self, xs: &[StorePath]| -> Result<Vec<(String, StorePath)>, DrvDiffError> {
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let mut out = Vec::new();
                for x in xs {
                    let d = w.load(x)?;
                    let id = identity(&d, x);
                    let n = seen.entry(id.clone()).or_default();
                    // The same identity twice on one side: pair them in order.
                    let key = if *n == 0 { id } else { format!("{id}#{n}") };
                    *n += 1;
                    if !out.iter().any(|(_, p)| p == x) {
                        out.push((key, x.clone()));
                    }
                }
                Ok(out)
            };
        let ka = keyed(self, a)?;
        let kb = keyed(self, b)?;
        let mb: BTreeMap<&String, &StorePath> = kb.iter().map(|(k, p)| (k, p)).collect();
        let mut p = Pairing::default();
        let mut used_b = BTreeSet::new();
        for (k, x) in &ka {
            match mb.get(k) {
                Some(y) => {
                    p.both.push((x.clone(), (*y).clone()));
                    used_b.insert(k.clone());
                }
                None => p.only_a.push(x.clone()),
            }
        }
        p.only_b = kb
            .iter()
            .filter(|(k, _)| !used_b.contains(k))
            .map(|(_, y)| y.clone())
            .collect();
        // Renamed: one of a group left on each side.
        let mut ga: BTreeMap<String, Vec<StorePath>> = BTreeMap::new();
        for x in &p.only_a {
            ga.entry(group(&*self.load(x)?))
                .or_default()
                .push(x.clone());
        }
        let mut gb: BTreeMap<String, Vec<StorePath>> = BTreeMap::new();
        for y in &p.only_b {
            gb.entry(group(&*self.load(y)?))
                .or_default()
                .push(y.clone());
        }
        for (g, xs) in &ga {
            if let (1, Some(ys)) = (xs.len(), gb.get(g)) {
                if ys.len() == 1 {
                    p.both.push((xs[0].clone(), ys[0].clone()));
                    p.only_a.retain(|x| x != &xs[0]);
                    p.only_b.retain(|y| y != &ys[0]);
                }
            }
        }
        Ok(p)
    }

    /// Walk a pair of inputs; records the input as changed in `cx`.
    fn child(&mut self, a: &StorePath, b: &StorePath, cx: &mut Cx) -> Result<(), DrvDiffError> {
        cx.claimed.insert(a.clone());
        cx.claimed.insert(b.clone());
        if self.walk(a, b)? {
            cx.input_changed(drv_name(b));
        }
        Ok(())
    }

    /// Walk two derivations in the same role; true if they differ.
    pub fn walk(&mut self, pa: &StorePath, pb: &StorePath) -> Result<bool, DrvDiffError> {
        if pa == pb {
            self.mark_unchanged(pa)?;
            return Ok(false);
        }
        if !self.visited.insert((pa.clone(), pb.clone())) {
            return Ok(true);
        }
        let da = self.load(pa)?;
        let db = self.load(pb)?;
        let name = label(&db, pb);
        let mut cx = Cx::default();
        cx.handle(&[ck::BUILDER, ck::SYSTEM]);
        // An output's variable holds the derivation's own output path, which follows
        // from everything else.
        cx.handled
            .extend(da.outputs.keys().chain(db.outputs.keys()).cloned());
        let (ka, kb) = (kind(&da), kind(&db));
        if ka != kb {
            // Not the same kind of thing: nothing below is comparable.
            cx.own.push(Reason::BuilderChanged {
                drv: name,
                old: da.builder.clone(),
                new: db.builder.clone(),
            });
            for r in cx.own {
                self.add_cause(r);
            }
            return Ok(true);
        }
        match ka {
            Kind::Build => self.build(&da, &db, &name, &mut cx)?,
            Kind::Unpack => self.unpack(&da, &db, &mut cx)?,
            Kind::BuildRoot => self.build_root(&da, &db, &name, &mut cx)?,
            Kind::Image => self.image(&da, &db, &name, &mut cx)?,
            Kind::Fetch => self.fetch(&da, &db, &name, &mut cx),
            Kind::Unknown => {}
        }
        self.common(&da, &db, &name, ka, &mut cx)?;
        if cx.own.is_empty() {
            if cx.changed_inputs.is_empty() {
                cx.own.push(Reason::Other {
                    drv: name,
                    detail: "the derivations differ, but not in env, builder, arguments or inputs"
                        .into(),
                });
            } else {
                self.consequences.push(Consequence {
                    name: drv_name(pb),
                    old: pa.clone(),
                    new: pb.clone(),
                    because: cx.changed_inputs,
                });
            }
        }
        for r in cx.own {
            self.add_cause(r);
        }
        Ok(true)
    }

    /// URL and sha256 of a fetch derivation.
    fn fetch_info(&mut self, p: &StorePath) -> Result<(String, String), DrvDiffError> {
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

    fn build(
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
    fn sources(
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
    fn patches(
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

    /// Both files' text, if both are regular files in the store.
    /// A sync whose `src` moved from one store file to another: its contents
    /// changed, shown as a short diff when both are text.
    fn sync_file(
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

    fn read_pair(&self, a: &StorePath, b: &StorePath) -> Option<(String, String)> {
        let read = |p: &StorePath| {
            let bytes = std::fs::read(self.store.physical_path(p)).ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        Some((read(a)?, read(b)?))
    }

    /// Options turned on or off, with the configure flags and recipe variables that
    /// came with them; flag changes without option changes on their own.
    fn options(&mut self, da: &Derivation, db: &Derivation, name: &str, cx: &mut Cx) {
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

    fn unpack(
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

    fn build_root(
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

    fn image(
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

    /// A fetch met on its own (not through a role that names it better).
    fn fetch(&mut self, da: &Derivation, db: &Derivation, name: &str, cx: &mut Cx) {
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

    /// What every kind shares: system, builder, arguments, outputs, the variables
    /// no role explained, and inputs no role claimed.
    fn common(
        &mut self,
        da: &Derivation,
        db: &Derivation,
        name: &str,
        k: Kind,
        cx: &mut Cx,
    ) -> Result<(), DrvDiffError> {
        let other = |detail: String| Reason::Other {
            drv: name.to_string(),
            detail,
        };
        if da.builder != db.builder {
            cx.own.push(Reason::BuilderChanged {
                drv: name.to_string(),
                old: da.builder.clone(),
                new: db.builder.clone(),
            });
        }
        if da.system != db.system {
            cx.own
                .push(other(format!("system {} → {}", da.system, db.system)));
        }
        let masked = |d: &Derivation| -> Vec<String> {
            d.args.iter().map(|a| mask_store_hashes(a)).collect()
        };
        if masked(da) != masked(db) {
            cx.own.push(other(format!(
                "builder arguments changed: {} → {}",
                da.args.join(" "),
                db.args.join(" ")
            )));
        }
        let outs = |d: &Derivation| -> Vec<(String, String, String)> {
            d.outputs
                .iter()
                .map(|(id, o)| {
                    let fixed = k != Kind::Fetch;
                    (
                        id.clone(),
                        o.hash_algo_field(),
                        if fixed { o.hash_field() } else { String::new() },
                    )
                })
                .collect()
        };
        if outs(da) != outs(db) {
            let show = |d: &Derivation| {
                outs(d)
                    .iter()
                    .map(|(id, algo, hash)| format!("{id}:{algo}:{hash}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            cx.own
                .push(other(format!("outputs {} → {}", show(da), show(db))));
        }
        let keys: BTreeSet<&String> = da.env.keys().chain(db.env.keys()).collect();
        for key in keys {
            if cx.handled.contains(key.as_str()) {
                continue;
            }
            let (va, vb) = (da.env.get(key), db.env.get(key));
            // Equal once input hashes are masked: it only names changed inputs.
            if va.map(|v| mask_store_hashes(v)) != vb.map(|v| mask_store_hashes(v)) {
                cx.own.push(Reason::EnvChanged {
                    package: name.to_string(),
                    var: key.clone(),
                    old: va.cloned(),
                    new: vb.cloned(),
                });
            }
        }
        // Plain sources no role claimed, by name.
        let srcs = |d: &Derivation, cx: &Cx| -> BTreeMap<String, StorePath> {
            d.input_srcs
                .iter()
                .filter(|s| !cx.claimed.contains(*s))
                .map(|s| (s.name().to_string(), s.clone()))
                .collect()
        };
        let (sa, sb) = (srcs(da, cx), srcs(db, cx));
        for (n, a) in &sa {
            match sb.get(n) {
                Some(b) if a != b => cx.own.push(Reason::InputSourceChanged {
                    drv: name.to_string(),
                    name: n.clone(),
                    old: a.clone(),
                    new: b.clone(),
                }),
                Some(_) => {}
                None => cx.own.push(other(format!("input {n} removed"))),
            }
        }
        for n in sb.keys() {
            if !sa.contains_key(n) {
                cx.own.push(other(format!("input {n} added")));
            }
        }
        // Input derivations no role claimed: paired by identity.
        let unclaimed = |d: &Derivation, cx: &Cx| -> Vec<StorePath> {
            d.input_drvs
                .keys()
                .filter(|p| !cx.claimed.contains(*p))
                .cloned()
                .collect()
        };
        let (ia, ib) = (unclaimed(da, cx), unclaimed(db, cx));
        let p = self.pair(&ia, &ib)?;
        for (x, y) in &p.both {
            self.child(x, y, cx)?;
        }
        for x in &p.only_a {
            cx.own.push(other(format!("input {} removed", drv_name(x))));
        }
        for y in &p.only_b {
            cx.own.push(other(format!("input {} added", drv_name(y))));
        }
        Ok(())
    }
}

/// The input `.drv`s whose outputs a space-separated env value names, in order.
fn traced(value: &str, outs: &BTreeMap<String, StorePath>) -> Vec<StorePath> {
    words(value)
        .into_iter()
        .filter_map(|w| outs.get(w).cloned())
        .collect()
}

/// A Debian version from the `.deb`'s pool file name (`name_version_arch.deb`),
/// else from the unpack derivation's name (`package-version`).
fn deb_version(url: &str, unpack: &Derivation) -> String {
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

/// A sync entry in a few words.
fn sync_summary(e: &serde_json::Map<String, Value>) -> String {
    let s = |k: &str| e.get(k).map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{} (mode {}, owner {}:{})",
        e.get("src").and_then(|v| v.as_str()).unwrap_or(""),
        s("mode"),
        s("uid"),
        s("gid")
    )
}

impl Walker<'_> {
    /// Pair the roots of both sides and walk each pair.
    pub fn roots(&mut self, a: &[StorePath], b: &[StorePath]) -> Result<(), DrvDiffError> {
        // One root on each side: the user paired them, whatever they are.
        if let ([x], [y]) = (a, b) {
            self.walk(x, y)?;
            return Ok(());
        }
        let p = self.pair(a, b)?;
        for (x, y) in &p.both {
            self.walk(x, y)?;
        }
        for x in &p.only_a {
            self.add_cause(Reason::RootRemoved {
                name: drv_name(x),
                drv: x.clone(),
            });
        }
        for y in &p.only_b {
            self.add_cause(Reason::RootAdded {
                name: drv_name(y),
                drv: y.clone(),
            });
        }
        Ok(())
    }
}

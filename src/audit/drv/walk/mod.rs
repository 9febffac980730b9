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

mod debian;
mod fetch;
mod image;
mod package;

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

    fn read_pair(&self, a: &StorePath, b: &StorePath) -> Option<(String, String)> {
        let read = |p: &StorePath| {
            let bytes = std::fs::read(self.store.physical_path(p)).ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        Some((read(a)?, read(b)?))
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

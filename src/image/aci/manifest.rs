//! The appc 0.8.11 image manifest, checked against the spec and against the
//! rootfs it describes.

use std::collections::HashMap;
use std::fs::{self, File};

use serde_json::{Map, Value};

use super::types::{
    ac_problem, arch_hint, c_identifier, http_url, rfc3339, semver, AC_VERSION_MAX_PATCH, OS_ARCH,
};
use super::AciError;
use crate::image::tree::{ImageTree, Kind};

const MANIFEST_FIELDS: &[&str] = &[
    "acKind",
    "acVersion",
    "name",
    "labels",
    "app",
    "annotations",
    "dependencies",
    "pathWhitelist",
];
const APP_FIELDS: &[&str] = &[
    "exec",
    "eventHandlers",
    "user",
    "group",
    "supplementaryGIDs",
    "workingDirectory",
    "environment",
    "mountPoints",
    "ports",
    "isolators",
    "userAnnotations",
    "userLabels",
];

/// Check an image manifest against appc 0.8.11 and against the rootfs it will
/// describe: programs named by `exec` must be there and executable, user names
/// must be in its `/etc/passwd`, and so on. All problems come back together.
pub fn check_manifest(manifest: &Value, tree: &ImageTree) -> Result<(), AciError> {
    let mut c = Checker {
        tree,
        problems: Vec::new(),
        rootfs_complete: true,
        mount_paths: Vec::new(),
    };
    c.manifest(manifest);
    if c.problems.is_empty() {
        Ok(())
    } else {
        Err(AciError::Manifest {
            problems: c.problems,
        })
    }
}

struct Checker<'a> {
    tree: &'a ImageTree,
    problems: Vec<String>,
    /// False when the manifest has dependencies: their files are laid under this
    /// rootfs at run time, so a path missing here may well exist then.
    rootfs_complete: bool,
    /// `app.mountPoints` paths: a working directory may be a volume.
    mount_paths: Vec<String>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn at(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Checker<'_> {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn string<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.problem(format!("{path} must be a string, not {}", kind(other)));
                None
            }
        }
    }

    fn array<'v>(&mut self, path: &str, v: &'v Value) -> Option<&'v Vec<Value>> {
        match v {
            Value::Array(a) => Some(a),
            other => {
                self.problem(format!("{path} must be an array, not {}", kind(other)));
                None
            }
        }
    }

    fn boolean(&mut self, path: &str, v: &Value) {
        if !v.is_boolean() {
            self.problem(format!("{path} must be true or false, not {}", kind(v)));
        }
    }

    fn integer(&mut self, path: &str, v: &Value) -> Option<u64> {
        match v.as_u64() {
            Some(n) => Some(n),
            None => {
                let what = if v.is_number() {
                    format!("{v}")
                } else {
                    kind(v).to_string()
                };
                self.problem(format!("{path} must be a whole number, not {what}"));
                None
            }
        }
    }

    /// An object with only the `known` fields (appc ignores others, so a typo
    /// like `enviroment` would silently drop the setting).
    fn object<'v>(
        &mut self,
        path: &str,
        v: &'v Value,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(obj) = v else {
            let what = if path.is_empty() {
                "the manifest"
            } else {
                path
            };
            self.problem(format!("{what} must be a JSON object, not {}", kind(v)));
            return None;
        };
        for k in obj.keys() {
            if !known.contains(&k.as_str()) {
                let within = if path.is_empty() {
                    "an image manifest".to_string()
                } else {
                    path.to_string()
                };
                self.problem(format!(
                    "{} is not an appc field (known in {within}: {})",
                    at(path, k),
                    known.join(", ")
                ));
            }
        }
        Some(obj)
    }

    fn required<'v>(
        &mut self,
        path: &str,
        obj: &'v Map<String, Value>,
        key: &str,
    ) -> Option<&'v Value> {
        let v = obj.get(key);
        if v.is_none() {
            self.problem(format!("{} is missing", at(path, key)));
        }
        v
    }

    fn ac(&mut self, path: &str, s: &str, seps: &str) -> bool {
        match ac_problem(s, seps) {
            Some(why) => {
                self.problem(format!("{path} '{s}' {why}"));
                false
            }
            None => true,
        }
    }

    fn absolute(&mut self, path: &str, s: &str) -> bool {
        if s.starts_with('/') {
            true
        } else {
            self.problem(format!("{path} '{s}' must be an absolute path"));
            false
        }
    }

    /// A name already seen at another index of the same list.
    /// Whether `name` is new to `seen`; a repeat is a problem naming the first.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, String>,
        path: &str,
        name: &str,
        what: &str,
    ) -> bool {
        if let Some(first) = seen.get(name) {
            self.problem(format!(
                "{path} '{name}' repeats {first}: {what} names must be unique"
            ));
            false
        } else {
            seen.insert(name.to_string(), path.to_string());
            true
        }
    }

    fn manifest(&mut self, v: &Value) {
        let Some(obj) = self.object("", v, MANIFEST_FIELDS) else {
            return;
        };
        if let Some(Value::Array(deps)) = obj.get("dependencies") {
            self.rootfs_complete = deps.is_empty();
        }
        if let Some(k) = self.required("", obj, "acKind") {
            if let Some(k) = self.string("acKind", k) {
                if k != "ImageManifest" {
                    self.problem(format!("acKind '{k}' must be \"ImageManifest\""));
                }
            }
        }
        if let Some(ver) = self.required("", obj, "acVersion") {
            if let Some(ver) = self.string("acVersion", ver) {
                match semver(ver) {
                    None => self.problem(format!(
                        "acVersion '{ver}' must be a semantic version, e.g. \"0.8.11\""
                    )),
                    Some((0, 8, p)) if p <= AC_VERSION_MAX_PATCH => {}
                    Some(_) => self.problem(format!(
                        "acVersion '{ver}' must be an appc 0.8 release, 0.8.0 to 0.8.{AC_VERSION_MAX_PATCH} \
                         (buildit checks and writes appc 0.8.11 images)"
                    )),
                }
            }
        }
        if let Some(name) = self.required("", obj, "name") {
            if let Some(name) = self.string("name", name) {
                self.ac("name", name, "-._~/");
            }
        }
        if let Some(labels) = obj.get("labels") {
            self.labels("labels", labels, true);
        }
        if let Some(deps) = obj.get("dependencies") {
            self.dependencies(deps);
        }
        if let Some(app) = obj.get("app") {
            self.app(app);
        }
        if let Some(ann) = obj.get("annotations") {
            self.annotations(ann);
        }
        if let Some(paths) = obj.get("pathWhitelist") {
            if let Some(paths) = self.array("pathWhitelist", paths) {
                let mut seen = HashMap::new();
                for (i, p) in paths.iter().enumerate() {
                    let path = format!("pathWhitelist[{i}]");
                    if let Some(p) = self.string(&path, p) {
                        if self.absolute(&path, p) {
                            self.unique(&mut seen, &path, p, "pathWhitelist");
                        }
                    }
                }
            }
        }
    }

    /// `own`: the image's labels, where `arch` without `os` is a mistake; in a
    /// dependency, labels are filters and may leave `os` open.
    fn labels(&mut self, path: &str, v: &Value, own: bool) {
        let Some(items) = self.array(path, v) else {
            return;
        };
        let mut seen = HashMap::new();
        let mut os: Option<(String, String)> = None;
        let mut arch: Option<(String, String)> = None;
        for (i, item) in items.iter().enumerate() {
            let ipath = format!("{path}[{i}]");
            let Some(obj) = self.object(&ipath, item, &["name", "value"]) else {
                continue;
            };
            let npath = format!("{ipath}.name");
            let name = self
                .required(&ipath, obj, "name")
                .and_then(|n| self.string(&npath, n));
            let vpath = format!("{ipath}.value");
            let value = self
                .required(&ipath, obj, "value")
                .and_then(|v| self.string(&vpath, v));
            let Some(name) = name else { continue };
            if !self.ac(&npath, name, "-._~/") {
                continue;
            }
            if name == "name" {
                self.problem(format!(
                    "{npath} 'name' is not allowed: appc reserves it for the image's own name field"
                ));
                continue;
            }
            // A repeated os or arch must not hide the first from the pair check.
            if !self.unique(&mut seen, &npath, name, "label") {
                continue;
            }
            if let Some(value) = value {
                match name {
                    "os" => os = Some((vpath, value.to_string())),
                    "arch" => arch = Some((vpath, value.to_string())),
                    _ => {}
                }
            }
        }
        match (os, arch) {
            (Some((opath, os)), arch) => match OS_ARCH.iter().find(|(o, _)| *o == os) {
                None => self.problem(format!(
                    "{opath}: os '{os}' is not one appc knows ({})",
                    OS_ARCH.map(|(o, _)| o).join(", ")
                )),
                Some((_, arches)) => {
                    if let Some((apath, arch)) = arch {
                        if !arches.contains(&arch.as_str()) {
                            let hint = arch_hint(&os, &arch)
                                .map(|a| format!("; appc spells it '{a}'"))
                                .unwrap_or_default();
                            self.problem(format!(
                                "{apath}: arch '{arch}' is not valid with os '{os}' (appc allows: {}){hint}",
                                arches.join(", ")
                            ));
                        }
                    }
                }
            },
            (None, Some((apath, arch))) if own => self.problem(format!(
                "{apath}: arch '{arch}' is given without an os label, and appc gives arch a meaning \
                 only together with os: add {{\"name\": \"os\", \"value\": \"linux\"}}"
            )),
            _ => {}
        }
    }

    fn app(&mut self, v: &Value) {
        let Some(app) = self.object("app", v, APP_FIELDS) else {
            return;
        };
        // Mount points first: the working directory may be one of them.
        if let Some(mps) = app.get("mountPoints") {
            self.mount_points(mps);
        }
        if let Some(exec) = self.required("app", app, "exec") {
            self.exec("app.exec", exec);
        }
        for (key, db) in [("user", "/etc/passwd"), ("group", "/etc/group")] {
            let path = format!("app.{key}");
            if let Some(v) = self.required("app", app, key) {
                if let Some(s) = self.string(&path, v) {
                    self.owner(&path, s, db);
                }
            }
        }
        if let Some(ehs) = app.get("eventHandlers") {
            if let Some(ehs) = self.array("app.eventHandlers", ehs) {
                let mut seen = HashMap::new();
                for (i, eh) in ehs.iter().enumerate() {
                    let path = format!("app.eventHandlers[{i}]");
                    let Some(eh) = self.object(&path, eh, &["name", "exec"]) else {
                        continue;
                    };
                    let npath = format!("{path}.name");
                    if let Some(name) = self
                        .required(&path, eh, "name")
                        .and_then(|n| self.string(&npath, n))
                    {
                        if name == "pre-start" || name == "post-stop" {
                            self.unique(&mut seen, &npath, name, "event handler");
                        } else {
                            self.problem(format!(
                                "{npath} '{name}' must be \"pre-start\" or \"post-stop\""
                            ));
                        }
                    }
                    if let Some(exec) = self.required(&path, eh, "exec") {
                        self.exec(&format!("{path}.exec"), exec);
                    }
                }
            }
        }
        if let Some(gids) = app.get("supplementaryGIDs") {
            if let Some(gids) = self.array("app.supplementaryGIDs", gids) {
                for (i, g) in gids.iter().enumerate() {
                    let path = format!("app.supplementaryGIDs[{i}]");
                    if let Some(g) = self.integer(&path, g) {
                        if g > u64::from(u32::MAX) {
                            self.problem(format!("{path} {g} is not a valid group id"));
                        }
                    }
                }
            }
        }
        if let Some(wd) = app.get("workingDirectory") {
            if let Some(wd) = self.string("app.workingDirectory", wd) {
                if self.absolute("app.workingDirectory", wd) {
                    self.working_directory(wd);
                }
            }
        }
        if let Some(env) = app.get("environment") {
            if let Some(env) = self.array("app.environment", env) {
                let mut seen = HashMap::new();
                for (i, e) in env.iter().enumerate() {
                    let path = format!("app.environment[{i}]");
                    let Some(e) = self.object(&path, e, &["name", "value"]) else {
                        continue;
                    };
                    let npath = format!("{path}.name");
                    if let Some(name) = self
                        .required(&path, e, "name")
                        .and_then(|n| self.string(&npath, n))
                    {
                        if c_identifier(name) {
                            self.unique(&mut seen, &npath, name, "environment variable");
                        } else {
                            self.problem(format!(
                                "{npath} '{name}' must be a C identifier: letters, digits and '_', \
                                 not starting with a digit"
                            ));
                        }
                    }
                    if let Some(value) = self.required(&path, e, "value") {
                        self.string(&format!("{path}.value"), value);
                    }
                }
            }
        }
        if let Some(ports) = app.get("ports") {
            self.ports(ports);
        }
        if let Some(isos) = app.get("isolators") {
            // Values are isolator-specific; appc's library checks the ones it
            // knows at run time, and unknown isolators are allowed.
            if let Some(isos) = self.array("app.isolators", isos) {
                for (i, iso) in isos.iter().enumerate() {
                    let path = format!("app.isolators[{i}]");
                    let Some(iso) = self.object(&path, iso, &["name", "value"]) else {
                        continue;
                    };
                    let npath = format!("{path}.name");
                    if let Some(name) = self
                        .required(&path, iso, "name")
                        .and_then(|n| self.string(&npath, n))
                    {
                        self.ac(&npath, name, "-._~/");
                    }
                    self.required(&path, iso, "value");
                }
            }
        }
        for key in ["userAnnotations", "userLabels"] {
            if let Some(m) = app.get(key) {
                let path = format!("app.{key}");
                match m {
                    Value::Object(m) => {
                        for (k, v) in m {
                            self.string(&format!("{path}.{k}"), v);
                        }
                    }
                    other => self.problem(format!(
                        "{path} must be an object of strings, not {}",
                        kind(other)
                    )),
                }
            }
        }
    }

    fn exec(&mut self, path: &str, v: &Value) {
        let Some(args) = self.array(path, v) else {
            return;
        };
        if args.is_empty() {
            self.problem(format!(
                "{path} must not be empty: give the program to run and its arguments"
            ));
            return;
        }
        for (i, a) in args.iter().enumerate() {
            self.string(&format!("{path}[{i}]"), a);
        }
        let ppath = format!("{path}[0]");
        if let Some(prog) = args[0].as_str() {
            if self.absolute(&ppath, prog) {
                self.program(&ppath, prog);
            }
        }
    }

    /// The program must be a file the runtime can execute; a script's
    /// interpreter must be there too, or the exec fails with a bare ENOENT.
    fn program(&mut self, path: &str, prog: &str) {
        if !self.rootfs_complete {
            return;
        }
        let Some((_, node)) = self.tree.resolve(prog) else {
            self.problem(format!(
                "{path} '{prog}' is not in the image (no such file, or a broken symlink on the way)"
            ));
            return;
        };
        let src = match &node.kind {
            Kind::File { src, .. } => src,
            Kind::Dir => {
                self.problem(format!("{path} '{prog}' is a directory, not a program"));
                return;
            }
            Kind::Symlink { .. } => {
                self.problem(format!("{path} '{prog}' does not resolve to a file"));
                return;
            }
        };
        if node.mode & 0o111 == 0 {
            self.problem(format!(
                "{path} '{prog}' is not executable (mode {:04o})",
                node.mode
            ));
            return;
        }
        let mut head = [0u8; 256];
        let n = match File::open(src).and_then(|mut f| crate::io_util::read_full(&mut f, &mut head))
        {
            Ok(n) => n,
            Err(e) => {
                self.problem(format!(
                    "{path} '{prog}': cannot read {}: {e}",
                    src.display()
                ));
                return;
            }
        };
        let Some(line) = head[..n].strip_prefix(b"#!") else {
            return;
        };
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let Some(interp) = line.split_whitespace().next() else {
            return;
        };
        let ok = self
            .tree
            .resolve(interp)
            .is_some_and(|(_, n)| matches!(n.kind, Kind::File { .. }) && n.mode & 0o111 != 0);
        if !ok {
            self.problem(format!(
                "{path} '{prog}' is a script for '{interp}', which is not an executable in the image"
            ));
        }
    }

    /// appc resolves user and group names in the image's own /etc/passwd and
    /// /etc/group, numbers as ids, and `/path` as the owner of that file.
    fn owner(&mut self, path: &str, s: &str, db: &str) {
        if s.is_empty() {
            self.problem(format!("{path} must not be empty: give a name or a number"));
            return;
        }
        if s.bytes().all(|b| b.is_ascii_digit()) || !self.rootfs_complete {
            return;
        }
        if s.starts_with('/') {
            if self.tree.resolve(s).is_none() {
                self.problem(format!(
                    "{path} '{s}' names the file whose owner the app runs as, but it is not in the image"
                ));
            }
            return;
        }
        let src = match self.tree.resolve(db) {
            Some((_, n)) => match &n.kind {
                Kind::File { src, .. } => src.clone(),
                _ => {
                    self.problem(format!(
                        "{path} '{s}' is a name, but {db} in the image is not a file"
                    ));
                    return;
                }
            },
            None => {
                self.problem(format!(
                    "{path} '{s}' is a name, but the image has no {db} to look it up in: give a number"
                ));
                return;
            }
        };
        let text = match fs::read(&src) {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                self.problem(format!(
                    "{path} '{s}': cannot read {db} ({}): {e}",
                    src.display()
                ));
                return;
            }
        };
        let names: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(':').next())
            .filter(|n| !n.is_empty())
            .collect();
        if !names.contains(&s) {
            self.problem(format!(
                "{path} '{s}' is not in the image's {db} (it has: {}): add it, or give a number",
                names.join(", ")
            ));
        }
    }

    fn working_directory(&mut self, wd: &str) {
        if !self.rootfs_complete {
            return;
        }
        let under_mount = self.mount_paths.iter().any(|m| {
            let m = m.trim_end_matches('/');
            wd == m || wd.strip_prefix(m).is_some_and(|r| r.starts_with('/'))
        });
        if under_mount {
            return;
        }
        match self.tree.resolve(wd) {
            Some((_, n)) if n.kind == Kind::Dir => {}
            Some(_) => self.problem(format!(
                "app.workingDirectory '{wd}' is not a directory in the image"
            )),
            None if wd.trim_end_matches('/').is_empty() => {}
            None => self.problem(format!(
                "app.workingDirectory '{wd}' is not in the image, and appc runtimes refuse to start \
                 an app whose working directory is missing"
            )),
        }
    }

    fn mount_points(&mut self, v: &Value) {
        let Some(mps) = self.array("app.mountPoints", v) else {
            return;
        };
        let mut seen = HashMap::new();
        for (i, mp) in mps.iter().enumerate() {
            let path = format!("app.mountPoints[{i}]");
            let Some(mp) = self.object(&path, mp, &["name", "path", "readOnly"]) else {
                continue;
            };
            let npath = format!("{path}.name");
            if let Some(name) = self
                .required(&path, mp, "name")
                .and_then(|n| self.string(&npath, n))
            {
                if self.ac(&npath, name, "-") {
                    self.unique(&mut seen, &npath, name, "mount point");
                }
            }
            let ppath = format!("{path}.path");
            if let Some(p) = self
                .required(&path, mp, "path")
                .and_then(|p| self.string(&ppath, p))
            {
                if self.absolute(&ppath, p) {
                    self.mount_paths.push(p.to_string());
                }
            }
            if let Some(ro) = mp.get("readOnly") {
                self.boolean(&format!("{path}.readOnly"), ro);
            }
        }
    }

    fn ports(&mut self, v: &Value) {
        let Some(ports) = self.array("app.ports", v) else {
            return;
        };
        let mut seen = HashMap::new();
        for (i, port) in ports.iter().enumerate() {
            let path = format!("app.ports[{i}]");
            let Some(port) = self.object(
                &path,
                port,
                &["name", "protocol", "port", "count", "socketActivated"],
            ) else {
                continue;
            };
            let npath = format!("{path}.name");
            if let Some(name) = self
                .required(&path, port, "name")
                .and_then(|n| self.string(&npath, n))
            {
                if self.ac(&npath, name, "-") {
                    self.unique(&mut seen, &npath, name, "port");
                }
            }
            let prpath = format!("{path}.protocol");
            if let Some(proto) = self
                .required(&path, port, "protocol")
                .and_then(|p| self.string(&prpath, p))
            {
                if proto.is_empty() {
                    self.problem(format!(
                        "{prpath} must not be empty (e.g. \"tcp\" or \"udp\")"
                    ));
                }
            }
            let ppath = format!("{path}.port");
            let number = self
                .required(&path, port, "port")
                .and_then(|p| self.integer(&ppath, p));
            if let Some(n) = number {
                if !(1..=65535).contains(&n) {
                    self.problem(format!("{ppath} {n} must be between 1 and 65535"));
                }
            }
            if let Some(count) = port.get("count") {
                let cpath = format!("{path}.count");
                if let Some(c) = self.integer(&cpath, count) {
                    if c == 0 {
                        self.problem(format!("{cpath} must be at least 1"));
                    } else if let Some(n) = number.filter(|n| (1..=65535).contains(n)) {
                        if n + c - 1 > 65535 {
                            self.problem(format!(
                                "{cpath} {c}: the range from port {n} would end past 65535"
                            ));
                        }
                    }
                }
            }
            if let Some(sa) = port.get("socketActivated") {
                self.boolean(&format!("{path}.socketActivated"), sa);
            }
        }
    }

    fn dependencies(&mut self, v: &Value) {
        let Some(deps) = self.array("dependencies", v) else {
            return;
        };
        for (i, dep) in deps.iter().enumerate() {
            let path = format!("dependencies[{i}]");
            let Some(dep) = self.object(&path, dep, &["imageName", "imageID", "labels", "size"])
            else {
                continue;
            };
            let npath = format!("{path}.imageName");
            if let Some(name) = self
                .required(&path, dep, "imageName")
                .and_then(|n| self.string(&npath, n))
            {
                self.ac(&npath, name, "-._~/");
            }
            if let Some(id) = dep.get("imageID") {
                let ipath = format!("{path}.imageID");
                if let Some(id) = self.string(&ipath, id) {
                    let ok = id.strip_prefix("sha512-").is_some_and(|h| {
                        h.len() == 128
                            && h.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    });
                    if !ok {
                        self.problem(format!(
                            "{ipath} '{id}' must be an image ID: \"sha512-\" and 128 lowercase hex digits"
                        ));
                    }
                }
            }
            if let Some(labels) = dep.get("labels") {
                self.labels(&format!("{path}.labels"), labels, false);
            }
            if let Some(size) = dep.get("size") {
                self.integer(&format!("{path}.size"), size);
            }
        }
    }

    fn annotations(&mut self, v: &Value) {
        let Some(anns) = self.array("annotations", v) else {
            return;
        };
        let mut seen = HashMap::new();
        for (i, ann) in anns.iter().enumerate() {
            let path = format!("annotations[{i}]");
            let Some(ann) = self.object(&path, ann, &["name", "value"]) else {
                continue;
            };
            let npath = format!("{path}.name");
            let name = self
                .required(&path, ann, "name")
                .and_then(|n| self.string(&npath, n));
            let vpath = format!("{path}.value");
            let value = self
                .required(&path, ann, "value")
                .and_then(|v| self.string(&vpath, v));
            let Some(name) = name else { continue };
            if !self.ac(&npath, name, "-._~/") {
                continue;
            }
            self.unique(&mut seen, &npath, name, "annotation");
            match (name, value) {
                ("created", Some(v)) if !rfc3339(v) => self.problem(format!(
                    "{vpath} '{v}' must be an RFC 3339 date-time, e.g. \"2024-01-31T12:00:00Z\" \
                     (appc's 'created' annotation)"
                )),
                ("homepage" | "documentation", Some(v)) if !http_url(v) => self.problem(format!(
                    "{vpath} '{v}' must be an http:// or https:// URL (appc's '{name}' annotation)"
                )),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::aci::testutil::{fixture, valid, Fixture};
    use serde_json::json;

    fn problems(f: &Fixture, m: &Value) -> Vec<String> {
        match check_manifest(m, &f.tree) {
            Ok(()) => Vec::new(),
            Err(AciError::Manifest { problems }) => problems,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// Apply `edit` to the valid manifest: exactly one problem, containing `want`.
    fn one_problem(f: &Fixture, edit: impl FnOnce(&mut Value), want: &str) {
        let mut m = valid();
        edit(&mut m);
        let p = problems(f, &m);
        assert_eq!(p.len(), 1, "expected one problem with {want:?}, got {p:#?}");
        assert!(p[0].contains(want), "expected {want:?} in {:?}", p[0]);
    }

    #[test]
    fn valid_manifest_passes() {
        let f = fixture();
        assert_eq!(problems(&f, &valid()), Vec::<String>::new());
        // The sample's own manifest (nginx-prod), templated.
        let sample = json!({
            "acKind": "ImageManifest",
            "acVersion": "0.8.11",
            "name": "nginx-production-1.22.1-p1",
            "labels": [{"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}],
            "app": {"exec": ["/usr/sbin/nginx", "-e", "stderr", "-g", "daemon off;"],
                    "user": "0", "group": "0"}
        });
        assert_eq!(problems(&f, &sample), Vec::<String>::new());
        // No app at all: a data image.
        let mut m = valid();
        m.as_object_mut().unwrap().remove("app");
        assert_eq!(problems(&f, &m), Vec::<String>::new());
    }

    #[test]
    fn each_invalid_case_has_its_message() {
        let f = fixture();
        one_problem(
            &f,
            |m| m["app"]["exec"] = json!([]),
            "app.exec must not be empty",
        );
        one_problem(
            &f,
            |m| m["app"]["exec"] = json!(["nginx"]),
            "app.exec[0] 'nginx' must be an absolute path",
        );
        one_problem(
            &f,
            |m| m["app"]["exec"] = json!(["/usr/bin/nginx"]),
            "app.exec[0] '/usr/bin/nginx' is not in the image",
        );
        one_problem(
            &f,
            |m| m["app"]["exec"] = json!(["/lib/libfoo.so"]),
            "app.exec[0] '/lib/libfoo.so' is not executable (mode 0644)",
        );
        one_problem(
            &f,
            |m| m["app"]["exec"] = json!(["/usr"]),
            "app.exec[0] '/usr' is a directory",
        );
        one_problem(
            &f,
            |m| m["app"]["exec"] = json!(["/bin/pyscript"]),
            "is a script for '/usr/bin/python3', which is not an executable in the image",
        );
        one_problem(
            &f,
            |m| m["name"] = json!("example.com//x"),
            "name 'example.com//x' has \"//\"",
        );
        one_problem(
            &f,
            |m| m["name"] = json!("example.com/Nginx"),
            "name 'example.com/Nginx' must be lowercase",
        );
        one_problem(
            &f,
            |m| m["name"] = json!("-nginx"),
            "must start and end with a letter or digit",
        );
        one_problem(
            &f,
            |m| m["labels"][1]["value"] = json!("x86_64"),
            "labels[1].value: arch 'x86_64' is not valid with os 'linux' (appc allows: amd64, i386, \
             aarch64, aarch64_be, armv6l, armv7l, armv7b, ppc64, ppc64le, s390x); appc spells it 'amd64'",
        );
        one_problem(
            &f,
            |m| m["labels"][0]["value"] = json!("windows"),
            "labels[0].value: os 'windows' is not one appc knows",
        );
        one_problem(
            &f,
            |m| m["labels"][2]["name"] = json!("os"),
            "labels[2].name 'os' repeats labels[0].name: label names must be unique",
        );
        one_problem(
            &f,
            |m| m["labels"][2]["name"] = json!("name"),
            "labels[2].name 'name' is not allowed",
        );
        one_problem(
            &f,
            |m| {
                m["app"]["environment"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "NGINX_ENV", "value": "dev"}))
            },
            "app.environment[1].name 'NGINX_ENV' repeats app.environment[0].name",
        );
        one_problem(
            &f,
            |m| m["app"]["environment"][0]["name"] = json!("NGINX-ENV"),
            "app.environment[0].name 'NGINX-ENV' must be a C identifier",
        );
        one_problem(
            &f,
            |m| m["rootfsX"] = json!({}),
            "rootfsX is not an appc field",
        );
        one_problem(
            &f,
            |m| m["app"]["enviroment"] = json!([]),
            "app.enviroment is not an appc field",
        );
        one_problem(
            &f,
            |m| m["acKind"] = json!("PodManifest"),
            "acKind 'PodManifest' must be \"ImageManifest\"",
        );
        one_problem(
            &f,
            |m| m["acVersion"] = json!("0.8"),
            "acVersion '0.8' must be a semantic version",
        );
        one_problem(
            &f,
            |m| m["acVersion"] = json!("0.9.0"),
            "acVersion '0.9.0' must be an appc 0.8 release",
        );
        one_problem(
            &f,
            |m| m["app"]["user"] = json!("nginx"),
            "app.user 'nginx' is not in the image's /etc/passwd (it has: root, www-data)",
        );
        one_problem(
            &f,
            |m| m["app"]["group"] = json!(""),
            "app.group must not be empty",
        );
        one_problem(
            &f,
            |m| {
                m["app"].as_object_mut().unwrap().remove("user");
            },
            "app.user is missing",
        );
        one_problem(
            &f,
            |m| m["app"]["workingDirectory"] = json!("var/www"),
            "app.workingDirectory 'var/www' must be an absolute path",
        );
        one_problem(
            &f,
            |m| m["app"]["workingDirectory"] = json!("/srv"),
            "app.workingDirectory '/srv' is not in the image",
        );
        one_problem(
            &f,
            |m| m["app"]["eventHandlers"][0]["name"] = json!("post-start"),
            "app.eventHandlers[0].name 'post-start' must be \"pre-start\" or \"post-stop\"",
        );
        one_problem(
            &f,
            |m| m["app"]["mountPoints"][0]["name"] = json!("nginx.cache"),
            "app.mountPoints[0].name 'nginx.cache' contains '.', which an AC name does not allow",
        );
        one_problem(
            &f,
            |m| m["app"]["ports"][0]["port"] = json!(70000),
            "app.ports[0].port 70000 must be between 1 and 65535",
        );
        one_problem(
            &f,
            |m| m["annotations"][1]["value"] = json!("yesterday"),
            "annotations[1].value 'yesterday' must be an RFC 3339 date-time",
        );
        one_problem(
            &f,
            |m| m["annotations"][1]["value"] = json!("2023-02-31T12:00:00Z"),
            "annotations[1].value '2023-02-31T12:00:00Z' must be an RFC 3339 date-time",
        );
        one_problem(
            &f,
            |m| m["acVersion"] = json!("0.8.011"),
            "acVersion '0.8.011' must be a semantic version",
        );
        one_problem(
            &f,
            |m| m["annotations"][2]["name"] = json!("authors"),
            "annotations[2].name 'authors' repeats annotations[0].name",
        );
        one_problem(
            &f,
            |m| {
                m["labels"].as_array_mut().unwrap().remove(0);
            },
            "labels[0].value: arch 'amd64' is given without an os label",
        );
    }

    #[test]
    fn all_problems_come_at_once() {
        let f = fixture();
        let mut m = valid();
        m["name"] = json!("Bad//Name");
        m["app"]["exec"] = json!(["nginx"]);
        m["extra"] = json!(1);
        let p = problems(&f, &m);
        assert_eq!(p.len(), 3, "{p:#?}");
        let e = check_manifest(&m, &f.tree).unwrap_err().to_string();
        assert!(
            e.starts_with("the ACI manifest has 3 problems:\n  - "),
            "{e}"
        );
        let m = json!(["not", "an", "object"]);
        assert_eq!(
            problems(&f, &m),
            vec!["the manifest must be a JSON object, not an array"]
        );
    }

    #[test]
    fn dependencies_are_checked_and_relax_rootfs_checks() {
        let f = fixture();
        let mut m = valid();
        // The program may come from the dependency.
        m["app"]["exec"] = json!(["/usr/bin/from-base"]);
        m["dependencies"] = json!([{
            "imageName": "example.com/base",
            "imageID": format!("sha512-{}", "0".repeat(128)),
            "labels": [{"name": "arch", "value": "amd64"}],
            "size": 1024
        }]);
        assert_eq!(problems(&f, &m), Vec::<String>::new());
        m["dependencies"][0]["imageID"] = json!("sha512-abc");
        m["dependencies"][0]["imageName"] = json!("example.com//base");
        let p = problems(&f, &m);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("dependencies[0].imageName 'example.com//base'"));
        assert!(p[1].starts_with("dependencies[0].imageID 'sha512-abc' must be an image ID"));
    }
}

//! The JSON that `nix show-derivation` (Nix 2.8) prints:
//!
//! ```text
//! { "/store/…-x.drv": {
//!     "outputs":   { "out": { "path": "/store/…-x" } },       // FOD: + "hashAlgo", "hash" (hex)
//!     "inputSrcs": [ "/store/…" ],
//!     "inputDrvs": { "/store/…-y.drv": [ "out" ] },
//!     "system": "x86_64-linux", "builder": "/bin/sh", "args": [ … ], "env": { … } } }
//! ```
//!
//! A deferred output is `{}` and a floating one `{"hashAlgo": "r:sha256"}`, as in Nix.
//! Key order is not significant in JSON; `serde_json` prints objects sorted.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use thiserror::Error;

use super::{parse_method_algo, Derivation, DerivationOutput, ValidationError};
use crate::hash::{Hash, HashError};
use crate::store_path::{StorePath, StorePathError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("{at}: expected {expected}")]
    Shape { at: String, expected: &'static str },
    #[error("{at}: {source}")]
    StorePath {
        at: String,
        #[source]
        source: StorePathError,
    },
    #[error("{at}: {source}")]
    Hash {
        at: String,
        #[source]
        source: HashError,
    },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

fn shape(at: impl Into<String>, expected: &'static str) -> JsonError {
    JsonError::Shape {
        at: at.into(),
        expected,
    }
}

fn object<'v>(v: &'v Value, at: &str) -> Result<&'v Map<String, Value>, JsonError> {
    v.as_object().ok_or_else(|| shape(at, "an object"))
}

fn string<'v>(v: &'v Value, at: &str) -> Result<&'v str, JsonError> {
    v.as_str().ok_or_else(|| shape(at, "a string"))
}

fn field<'v>(obj: &'v Map<String, Value>, key: &'static str) -> Result<&'v Value, JsonError> {
    obj.get(key).ok_or_else(|| shape(key, "this field"))
}

fn strings(v: &Value, at: &str) -> Result<Vec<String>, JsonError> {
    v.as_array()
        .ok_or_else(|| shape(at, "an array of strings"))?
        .iter()
        .map(|s| string(s, at).map(str::to_string))
        .collect()
}

fn store_path(s: &str, at: &str) -> Result<StorePath, JsonError> {
    StorePath::from_absolute(s).map_err(|source| JsonError::StorePath {
        at: at.to_string(),
        source,
    })
}

fn output_json(o: &DerivationOutput) -> Value {
    let mut obj = Map::new();
    if let Some(p) = o.path() {
        obj.insert("path".into(), p.to_absolute().into());
    }
    if o.is_fixed() || matches!(o, DerivationOutput::Floating { .. }) {
        obj.insert("hashAlgo".into(), o.hash_algo_field().into());
    }
    if o.is_fixed() {
        obj.insert("hash".into(), o.hash_field().into());
    }
    Value::Object(obj)
}

fn output_from_json(v: &Value, at: &str) -> Result<DerivationOutput, JsonError> {
    let obj = object(v, at)?;
    if let Some(k) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "path" | "hashAlgo" | "hash"))
    {
        return Err(shape(
            format!("{at}.{k}"),
            "only the fields path, hashAlgo and hash",
        ));
    }
    let path = obj
        .get("path")
        .map(|p| store_path(string(p, at)?, at))
        .transpose()?;
    let algo = obj.get("hashAlgo").map(|a| string(a, at)).transpose()?;
    let hash = obj.get("hash").map(|h| string(h, at)).transpose()?;
    let hash_err = |source| JsonError::Hash {
        at: at.to_string(),
        source,
    };
    Ok(match (path, algo, hash) {
        (None, None, None) => DerivationOutput::Deferred,
        (Some(p), None, None) => DerivationOutput::InputAddressed(p),
        (path, Some(algo), Some(hash)) => {
            let (method, algo) = parse_method_algo(algo).map_err(hash_err)?;
            DerivationOutput::Fixed {
                path,
                method,
                hash: Hash::parse_bare(hash, algo).map_err(hash_err)?,
            }
        }
        (None, Some(algo), None) => {
            let (method, algo) = parse_method_algo(algo).map_err(hash_err)?;
            DerivationOutput::Floating { method, algo }
        }
        _ => {
            return Err(shape(
                at,
                "{path}, {path, hashAlgo, hash}, {hashAlgo} or {}",
            ))
        }
    })
}

impl Derivation {
    /// `nix show-derivation`'s output for this derivation stored at `drv_path`.
    pub fn to_nix_json(&self, drv_path: &StorePath) -> Value {
        let mut root = Map::new();
        root.insert(drv_path.to_absolute(), self.to_nix_json_body());
        Value::Object(root)
    }

    /// The object under the `.drv` path in [`to_nix_json`](Self::to_nix_json).
    pub fn to_nix_json_body(&self) -> Value {
        let outputs: Map<String, Value> = self
            .outputs
            .iter()
            .map(|(id, o)| (id.clone(), output_json(o)))
            .collect();
        let input_drvs: Map<String, Value> = self
            .input_drvs
            .iter()
            .map(|(p, names)| (p.to_absolute(), json!(names)))
            .collect();
        let input_srcs: Vec<String> = self.input_srcs.iter().map(StorePath::to_absolute).collect();
        json!({
            "outputs": outputs,
            "inputSrcs": input_srcs,
            "inputDrvs": input_drvs,
            "system": self.system,
            "builder": self.builder,
            "args": self.args,
            "env": self.env,
        })
    }

    /// Read the object [`to_nix_json_body`](Self::to_nix_json_body) writes (one
    /// value of `nix show-derivation`'s output), and [`validate`](Self::validate) it.
    /// Hashes are accepted in hex, nix32 or base64; unknown fields are rejected.
    pub fn from_nix_json_body(v: &Value) -> Result<Derivation, JsonError> {
        let obj = object(v, "derivation")?;
        const FIELDS: [&str; 7] = [
            "outputs",
            "inputSrcs",
            "inputDrvs",
            "system",
            "builder",
            "args",
            "env",
        ];
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(shape(k.clone(), "no such field in a derivation"));
        }

        let mut outputs = BTreeMap::new();
        for (id, o) in object(field(obj, "outputs")?, "outputs")? {
            outputs.insert(id.clone(), output_from_json(o, &format!("outputs.{id}"))?);
        }
        let mut input_drvs = BTreeMap::new();
        for (p, names) in object(field(obj, "inputDrvs")?, "inputDrvs")? {
            let at = format!("inputDrvs.{p}");
            let names: BTreeSet<String> = strings(names, &at)?.into_iter().collect();
            input_drvs.insert(store_path(p, &at)?, names);
        }
        let input_srcs = strings(field(obj, "inputSrcs")?, "inputSrcs")?
            .iter()
            .map(|p| store_path(p, "inputSrcs"))
            .collect::<Result<_, _>>()?;
        let mut env = BTreeMap::new();
        for (k, val) in object(field(obj, "env")?, "env")? {
            env.insert(k.clone(), string(val, &format!("env.{k}"))?.to_string());
        }
        let drv = Derivation {
            outputs,
            input_drvs,
            input_srcs,
            system: string(field(obj, "system")?, "system")?.to_string(),
            builder: string(field(obj, "builder")?, "builder")?.to_string(),
            args: strings(field(obj, "args")?, "args")?,
            env,
        };
        drv.validate()?;
        Ok(drv)
    }
}

/// Read the whole output of `nix show-derivation`: `.drv` path → derivation.
pub fn parse_nix_show_derivation(v: &Value) -> Result<BTreeMap<StorePath, Derivation>, JsonError> {
    object(v, "top level")?
        .iter()
        .map(|(p, body)| {
            let path = store_path(p, "top level")?;
            Ok((path, Derivation::from_nix_json_body(body)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileIngestion;

    const FOD: &str = r#"Derive([("out","/store/c26jl9lbzsj9acwr771qa5rn7q4v9lar-fod-flat.txt","sha256","5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")],[],[],"x86_64-linux","/bin/sh",["-c","printf 'hello\\n' > $out"],[("builder","/bin/sh"),("name","fod-flat.txt"),("out","/store/c26jl9lbzsj9acwr771qa5rn7q4v9lar-fod-flat.txt"),("outputHash","5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),("outputHashAlgo","sha256"),("outputHashMode","flat"),("system","x86_64-linux")])"#;

    #[test]
    fn fod_shape() {
        let d = Derivation::from_aterm(FOD.as_bytes()).unwrap();
        let p = d.drv_path().unwrap();
        assert_eq!(
            p.to_absolute(),
            "/store/9parksk8clpr2zd2qlmmc63n5lgr5cf5-fod-flat.txt.drv"
        );
        let v = d.to_nix_json(&p);
        assert_eq!(
            v,
            json!({ p.to_absolute(): {
                "outputs": { "out": {
                    "path": "/store/c26jl9lbzsj9acwr771qa5rn7q4v9lar-fod-flat.txt",
                    "hashAlgo": "sha256",
                    "hash": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
                }},
                "inputSrcs": [],
                "inputDrvs": {},
                "system": "x86_64-linux",
                "builder": "/bin/sh",
                "args": ["-c", "printf 'hello\\n' > $out"],
                "env": {
                    "builder": "/bin/sh",
                    "name": "fod-flat.txt",
                    "out": "/store/c26jl9lbzsj9acwr771qa5rn7q4v9lar-fod-flat.txt",
                    "outputHash": "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
                    "outputHashAlgo": "sha256",
                    "outputHashMode": "flat",
                    "system": "x86_64-linux",
                },
            }})
        );
        let back = parse_nix_show_derivation(&v).unwrap();
        assert_eq!(back.get(&p), Some(&d));
    }

    #[test]
    fn other_output_kinds() {
        for (o, j) in [
            (DerivationOutput::Deferred, json!({})),
            (
                DerivationOutput::Floating {
                    method: FileIngestion::Recursive,
                    algo: crate::HashAlgo::Sha256,
                },
                json!({"hashAlgo": "r:sha256"}),
            ),
        ] {
            assert_eq!(output_json(&o), j);
            assert_eq!(output_from_json(&j, "o").unwrap(), o);
        }
        assert!(output_from_json(&json!({"hash": "00"}), "o").is_err());
        assert!(output_from_json(&json!({"path": "/store/x"}), "o").is_err());
        assert!(output_from_json(&json!({"paths": 1}), "o").is_err());
    }

    #[test]
    fn rejects_bad_json() {
        let d = Derivation::from_aterm(FOD.as_bytes()).unwrap();
        let mut body = d.to_nix_json_body();
        body["system"] = json!("a\"b");
        assert!(matches!(
            Derivation::from_nix_json_body(&body),
            Err(JsonError::Invalid(ValidationError::BadSystem { .. }))
        ));
        let mut body = d.to_nix_json_body();
        body["extra"] = json!(1);
        assert!(Derivation::from_nix_json_body(&body).is_err());
        let mut body = d.to_nix_json_body();
        body["args"] = json!([1]);
        assert!(Derivation::from_nix_json_body(&body).is_err());
        let mut body = d.to_nix_json_body();
        body["inputSrcs"] = json!(["/nix/store/x"]);
        assert!(matches!(
            Derivation::from_nix_json_body(&body),
            Err(JsonError::StorePath { .. })
        ));
        assert!(parse_nix_show_derivation(&json!([])).is_err());
    }
}

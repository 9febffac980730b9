//! Every derivation in `vectors/derivations.json` (written by Nix 2.8): exact bytes,
//! `.drv` paths, modulo hashes and output paths, with each case's input closure as
//! the store the hasher loads from.

use std::collections::{BTreeMap, HashMap};

use buildit_store::derivation::{
    parse_nix_show_derivation, Derivation, DerivationError, DerivationHasher, DerivationOutput,
};
use buildit_store::store_path::{make_fixed_output_path, make_output_path};
use buildit_store::{Hash, StorePath};
use serde_json::Value;

struct Case {
    name: String,
    drv_path: String,
    aterm: String,
    outputs: BTreeMap<String, String>,
    closure: HashMap<StorePath, String>,
    raw: Value,
}

fn str_field<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("field {key} is not a string"))
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_string()))
        .collect()
}

fn cases() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/derivations.json"
    );
    let text = std::fs::read_to_string(path).expect("read derivations.json");
    let root: Value = serde_json::from_str(&text).expect("parse derivations.json");
    assert_eq!(root["store_dir"], "/store");
    let cases: Vec<Case> = root["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            name: str_field(c, "name").to_string(),
            drv_path: str_field(c, "drv_path").to_string(),
            aterm: str_field(c, "drv_aterm").to_string(),
            outputs: string_map(&c["outputs"]),
            closure: string_map(&c["input_drv_closure"])
                .into_iter()
                .map(|(p, a)| (StorePath::from_absolute(&p).expect("closure path"), a))
                .collect(),
            raw: c.clone(),
        })
        .collect();
    assert_eq!(cases.len(), 13);
    cases
}

fn hasher(
    case: &Case,
) -> DerivationHasher<impl FnMut(&StorePath) -> Result<Derivation, DerivationError> + '_> {
    DerivationHasher::new(move |p: &StorePath| {
        let aterm = case
            .closure
            .get(p)
            .ok_or_else(|| DerivationError::UnknownInput(p.clone()))?;
        Ok(Derivation::from_aterm(aterm.as_bytes())?)
    })
}

fn parse(case: &Case) -> Derivation {
    Derivation::from_aterm(case.aterm.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

fn output_paths(d: &Derivation) -> BTreeMap<String, String> {
    d.outputs
        .iter()
        .map(|(id, o)| {
            let p = o.path().expect("output path");
            (id.clone(), p.to_absolute())
        })
        .collect()
}

#[test]
fn aterm_roundtrip_and_drv_path() {
    for case in cases() {
        let d = parse(&case);
        assert_eq!(d.to_aterm().unwrap(), case.aterm, "{}", case.name);
        assert_eq!(
            d.drv_path().unwrap().to_absolute(),
            case.drv_path,
            "{}",
            case.name
        );
        assert_eq!(output_paths(&d), case.outputs, "{}", case.name);

        // The .drv path's fingerprint names sha256 of exactly these bytes.
        let fp = str_field(&case.raw, "drv_path_fingerprint_derived");
        let inner = Hash::sha256(case.aterm.as_bytes()).to_hex();
        assert!(
            fp.contains(&format!(":sha256:{inner}:/store:")),
            "{}",
            case.name
        );

        // Every input .drv in the closure round-trips and lives at its own path.
        for (path, aterm) in &case.closure {
            let input = Derivation::from_aterm(aterm.as_bytes()).unwrap();
            assert_eq!(&input.to_aterm().unwrap(), aterm, "{}: {path}", case.name);
            assert_eq!(&input.drv_path().unwrap(), path, "{}", case.name);
        }
    }
}

#[test]
fn modulo_hashes() {
    for case in cases() {
        let d = parse(&case);
        let mut h = hasher(&case);
        if let Some(ia) = case.raw.get("input_addressed_derived") {
            assert!(!d.is_fixed_output(), "{}", case.name);
            let masked = h.hash_modulo(&d, true).unwrap();
            assert_eq!(
                masked.to_hex(),
                str_field(ia, "hash_modulo_masked_hex"),
                "{}",
                case.name
            );
            assert_eq!(
                h.hash_modulo(&d, false).unwrap().to_hex(),
                str_field(ia, "hash_modulo_as_input_hex"),
                "{}",
                case.name
            );
            assert_eq!(
                h.hash_modulo_preimage(&d, true).unwrap(),
                str_field(ia, "masked_aterm"),
                "{}",
                case.name
            );
            for (input, hex) in string_map(&ia["input_drv_replacements"]) {
                let input = StorePath::from_absolute(&input).unwrap();
                assert_eq!(h.input_hash(&input).unwrap().to_hex(), hex, "{}", case.name);
            }
            let name = d.name().unwrap();
            for (id, fp) in string_map(&ia["output_fingerprints"]) {
                let out_name = buildit_store::store_path::output_path_name(&name, &id);
                assert_eq!(
                    fp,
                    format!("output:{id}:sha256:{}:/store:{out_name}", masked.to_hex()),
                    "{}",
                    case.name
                );
                let p = make_output_path(&id, &masked, &name).unwrap();
                assert_eq!(p.to_absolute(), case.outputs[&id], "{}", case.name);
            }
        } else {
            let fod = &case.raw["fixed_output_derived"];
            assert!(d.is_fixed_output(), "{}", case.name);
            for mask in [true, false] {
                assert_eq!(
                    h.hash_modulo(&d, mask).unwrap().to_hex(),
                    str_field(fod, "hash_modulo_hex"),
                    "{}",
                    case.name
                );
                assert_eq!(
                    h.hash_modulo_preimage(&d, mask).unwrap(),
                    str_field(fod, "hash_modulo_string"),
                    "{}",
                    case.name
                );
            }
            let Some(DerivationOutput::Fixed { method, hash, .. }) = d.outputs.get("out") else {
                panic!("{}: not a fixed output", case.name);
            };
            let p = make_fixed_output_path(&d.name().unwrap(), *method, hash, [], false).unwrap();
            assert_eq!(p.to_absolute(), case.outputs["out"], "{}", case.name);
        }
        // Each input .drv was loaded once, however often it was asked for.
        assert!(h.len() <= case.closure.len(), "{}", case.name);
    }
}

/// What a front end hands over: outputs without paths, output env vars empty (or
/// absent).
fn blank(d: &Derivation, drop_env: bool) -> Derivation {
    let mut b = d.clone();
    for (id, o) in b.outputs.iter_mut() {
        match o {
            DerivationOutput::Fixed { path, .. } => *path = None,
            other => *other = DerivationOutput::Deferred,
        }
        if drop_env {
            b.env.remove(id);
        } else {
            b.env.insert(id.clone(), String::new());
        }
    }
    b
}

#[test]
fn fill_output_paths_reproduces_nix() {
    for case in cases() {
        let d = parse(&case);
        for drop_env in [false, true] {
            let mut b = blank(&d, drop_env);
            assert_ne!(b, d);
            let mut h = hasher(&case);
            h.fill_output_paths(&mut b)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(b, d, "{}", case.name);
            assert_eq!(b.to_aterm().unwrap(), case.aterm, "{}", case.name);
            assert_eq!(
                b.drv_path().unwrap().to_absolute(),
                case.drv_path,
                "{}",
                case.name
            );
        }

        // The same through the plain closure API, with a hand-rolled memo.
        let mut h = hasher(&case);
        let mut b = blank(&d, false);
        let hashes: HashMap<StorePath, Hash> = d
            .input_drvs
            .keys()
            .map(|p| (p.clone(), h.input_hash(p).unwrap()))
            .collect();
        b.fill_output_paths(|p: &StorePath| {
            hashes
                .get(p)
                .cloned()
                .ok_or_else(|| DerivationError::UnknownInput(p.clone()))
        })
        .unwrap();
        assert_eq!(b.to_aterm().unwrap(), case.aterm, "{}", case.name);

        // Nix's read-time check accepts the original and spots a wrong path.
        h.check_output_paths(&d).unwrap();
        let mut wrong = d.clone();
        if let Some(first) = wrong.outputs.values_mut().next() {
            if let DerivationOutput::InputAddressed(p) = first {
                *p = StorePath::from_digest(&[0; 20], p.name()).unwrap();
            } else if let DerivationOutput::Fixed { path, .. } = first {
                *path = Some(StorePath::from_digest(&[0; 20], "x").unwrap());
            }
        }
        assert!(matches!(
            h.check_output_paths(&wrong),
            Err(DerivationError::IncorrectOutput { .. })
        ));
    }
}

#[test]
fn hasher_loads_each_input_once() {
    let cases = cases();
    let chain = cases
        .iter()
        .find(|c| c.name == "chain")
        .expect("chain case");
    let d = parse(chain);
    let mut loads: HashMap<StorePath, usize> = HashMap::new();
    let mut h = DerivationHasher::new(|p: &StorePath| {
        *loads.entry(p.clone()).or_default() += 1;
        let aterm = chain
            .closure
            .get(p)
            .ok_or_else(|| DerivationError::UnknownInput(p.clone()))?;
        Ok::<_, DerivationError>(Derivation::from_aterm(aterm.as_bytes())?)
    });
    let first = h.hash_modulo(&d, true).unwrap();
    assert_eq!(h.hash_modulo(&d, true).unwrap(), first);
    h.check_output_paths(&d).unwrap();
    drop(h);
    // chain → with-inputs → {minimal, multi}, chain → fod-consumer → {fod-flat, fod-rec}.
    assert_eq!(loads.len(), chain.closure.len());
    assert!(loads.values().all(|&n| n == 1), "{loads:?}");
}

#[test]
fn nix_json_roundtrip() {
    for case in cases() {
        let d = parse(&case);
        let p = d.drv_path().unwrap();
        let v = d.to_nix_json(&p);
        let body = &v[case.drv_path.as_str()];
        assert_eq!(body["system"], "x86_64-linux", "{}", case.name);
        for (id, path) in &case.outputs {
            assert_eq!(body["outputs"][id]["path"], path.as_str(), "{}", case.name);
        }
        let back = parse_nix_show_derivation(&v).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.get(&p), Some(&d), "{}", case.name);
    }
}

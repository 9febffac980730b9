//! The scheduler: the derivation graph (petgraph) from the targets down, the
//! steps that are needed, and a pool that starts each step as soon as its inputs
//! are done, up to `jobs` at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use buildit_lang::debian::{BUILDROOT, FETCHURL, UNPACK_DEB};
use buildit_lang::lower::image::IMAGE;
use buildit_store::{Derivation, StorePath};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use super::events::{Event, StepKind};
use super::sandboxed::Built;
use super::{display_name, BuildError, CheckedOutput, Failure, Realiser, Report, INTERRUPTED};

struct Step {
    drv_path: StorePath,
    drv: Derivation,
    name: String,
    kind: StepKind,
}

impl Realiser<'_> {
    /// Realise every output of `targets` (`.drv` paths valid in the store). With
    /// `options.check`, targets whose outputs are valid are rebuilt and compared.
    pub fn realise(&self, targets: &[StorePath]) -> Result<Report, BuildError> {
        // The graph: an edge from each input derivation to its user.
        let mut graph: DiGraph<StorePath, ()> = DiGraph::new();
        let mut index: BTreeMap<StorePath, NodeIndex> = BTreeMap::new();
        let mut drvs: BTreeMap<NodeIndex, Derivation> = BTreeMap::new();
        let mut queue: VecDeque<StorePath> = targets.iter().cloned().collect();
        while let Some(p) = queue.pop_front() {
            if index.contains_key(&p) {
                continue;
            }
            let d = self.store.read_derivation(&p)?;
            let n = graph.add_node(p.clone());
            index.insert(p, n);
            queue.extend(d.input_drvs.keys().cloned());
            drvs.insert(n, d);
        }
        for (&n, d) in &drvs {
            for i in d.input_drvs.keys() {
                graph.add_edge(index[i], n, ());
            }
        }
        petgraph::algo::toposort(&graph, None).map_err(|c| {
            BuildError::Invalid(format!(
                "the derivation graph has a cycle through {}",
                graph[c.node_id()]
            ))
        })?;

        let target_nodes: BTreeSet<NodeIndex> = targets.iter().map(|t| index[t]).collect();
        let mut report = Report::default();
        let mut steps: BTreeMap<NodeIndex, Step> = BTreeMap::new();
        for (&n, d) in &drvs {
            let valid = self.outputs_valid(d)?;
            let kind = if valid && self.options.check && target_nodes.contains(&n) {
                StepKind::Check
            } else if valid {
                report.already_valid += 1;
                continue;
            } else {
                match d.builder.as_str() {
                    FETCHURL => StepKind::Fetch,
                    UNPACK_DEB | BUILDROOT => StepKind::Builtin,
                    IMAGE => StepKind::Image,
                    _ => StepKind::Build,
                }
            };
            let drv_path = graph[n].clone();
            steps.insert(
                n,
                Step {
                    name: display_name(&drv_path, d),
                    drv_path,
                    drv: d.clone(),
                    kind,
                },
            );
        }
        self.progress.event(Event::Planned {
            to_do: steps.len(),
            already_valid: report.already_valid,
        });

        // Kahn's algorithm, driven by completions.
        let mut waiting: BTreeMap<NodeIndex, usize> = steps
            .keys()
            .map(|&n| {
                let inputs = graph
                    .neighbors_directed(n, Direction::Incoming)
                    .filter(|i| steps.contains_key(i))
                    .count();
                (n, inputs)
            })
            .collect();
        let mut ready: VecDeque<NodeIndex> = waiting
            .iter()
            .filter(|(_, c)| **c == 0)
            .map(|(n, _)| *n)
            .collect();
        for n in &ready {
            waiting.remove(n);
        }
        let jobs = self.options.jobs.max(1);
        let mut running: BTreeMap<NodeIndex, Arc<AtomicBool>> = BTreeMap::new();
        let mut stopping = false;
        let (tx, rx) = mpsc::channel::<(NodeIndex, Result<Built, BuildError>)>();
        std::thread::scope(|s| loop {
            if INTERRUPTED.load(Ordering::Relaxed) && !stopping {
                stopping = true;
                report.interrupted = true;
                for c in running.values() {
                    c.store(true, Ordering::Relaxed);
                }
            }
            while !stopping && running.len() < jobs {
                let Some(n) = ready.pop_front() else { break };
                let cancel = Arc::new(AtomicBool::new(false));
                running.insert(n, cancel.clone());
                let step = &steps[&n];
                let tx = tx.clone();
                s.spawn(move || {
                    let r = self.run_step(step, &cancel);
                    let _ = tx.send((n, r));
                });
            }
            if running.is_empty() {
                break;
            }
            let (n, result) = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(done) => done,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            running.remove(&n);
            let step = &steps[&n];
            match result {
                Ok(built @ (Built::Registered | Built::Noted(_))) => {
                    if let Built::Noted(note) = built {
                        report.notes.push((step.name.clone(), note));
                    }
                    report.built.push(step.drv_path.clone());
                    for user in graph.neighbors_directed(n, Direction::Outgoing) {
                        if let Some(c) = waiting.get_mut(&user) {
                            *c -= 1;
                            if *c == 0 {
                                waiting.remove(&user);
                                ready.push_back(user);
                            }
                        }
                    }
                }
                Ok(Built::Checked(outputs)) => {
                    report
                        .checked
                        .extend(outputs.into_iter().map(|(output, expected, actual)| {
                            CheckedOutput {
                                drv: step.drv_path.clone(),
                                output,
                                expected,
                                actual,
                            }
                        }));
                }
                Err(BuildError::Cancelled { drv }) => report.cancelled.push(drv),
                Err(e) => {
                    let log = match &e {
                        BuildError::Failed { log, .. } => log.clone(),
                        _ => None,
                    };
                    report.failed.push(Failure {
                        drv: step.drv_path.clone(),
                        name: step.name.clone(),
                        reason: e.reason(),
                        log,
                    });
                    if !self.options.keep_going && !stopping {
                        stopping = true;
                        for c in running.values() {
                            c.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        // Whatever never started: its inputs failed, or we stopped early.
        let failed: BTreeSet<&StorePath> = report.failed.iter().map(|f| &f.drv).collect();
        let mut skipped: Vec<StorePath> = waiting
            .keys()
            .chain(ready.iter())
            .map(|n| graph[*n].clone())
            .filter(|p| !failed.contains(p))
            .collect();
        skipped.sort();
        report.skipped = skipped;
        Ok(report)
    }

    fn outputs_valid(&self, d: &Derivation) -> Result<bool, BuildError> {
        for o in d.outputs.values() {
            match o.path() {
                Some(p) if self.store.is_valid(p)? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    fn run_step(&self, step: &Step, cancel: &Arc<AtomicBool>) -> Result<Built, BuildError> {
        let start = Instant::now();
        self.progress.event(Event::Started {
            drv: &step.drv_path,
            name: &step.name,
            kind: step.kind,
        });
        let check = step.kind == StepKind::Check;
        let result = match step.drv.builder.as_str() {
            FETCHURL if check => self.check_fetch(&step.drv_path, &step.drv),
            FETCHURL => self.fetch(&step.drv_path, &step.drv),
            UNPACK_DEB | BUILDROOT => self.build_tree(&step.drv_path, &step.drv, check),
            IMAGE => self.build_image(&step.drv_path, &step.drv, check),
            b if b.starts_with("builtin:") => Err(BuildError::UnsupportedBuilder {
                drv: step.drv_path.clone(),
                builder: b.to_string(),
            }),
            _ => self.build_sandboxed(&step.drv_path, &step.drv, check, cancel),
        };
        let reason = result.as_ref().err().map(|e| e.reason());
        let mismatch = match &result {
            Ok(Built::Checked(outs)) if outs.iter().any(|(_, e, a)| e != a) => {
                Some("output differs from the registered one".to_string())
            }
            _ => None,
        };
        self.progress.event(Event::Finished {
            drv: &step.drv_path,
            name: &step.name,
            kind: step.kind,
            elapsed: start.elapsed(),
            result: match reason.as_deref().or(mismatch.as_deref()) {
                Some(r) => Err(r),
                None => Ok(()),
            },
        });
        result
    }
}

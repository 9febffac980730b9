//! The scheduler: the derivation graph (petgraph) from the targets down, the
//! steps that are needed, and a pool that starts each step as soon as its inputs
//! are done, up to `jobs` at once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use buildit_store::builtins::{Builder, ContractError, Kind};
use buildit_store::{Derivation, StorePath};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use super::events::{Event, StepKind};
use super::sandboxed::Built;
use super::substitute::Substituter;
use super::{display_name, BuildError, CheckedOutput, Failure, Realiser, Report};

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
        for d in drvs.values() {
            if self.outputs_valid(d)? {
                report.already_valid += 1;
            }
        }

        // Substitute what the caches have, then build the rest. A path that fails
        // to download is forgotten and the plan made again: its derivation is then
        // built (and so are its inputs, which may in turn come from a cache).
        let no_caches: &[crate::cache::BinaryCache] = &[];
        let subst = Substituter::new(if self.options.substitute {
            self.caches
        } else {
            no_caches
        });
        let decisions = loop {
            let (decisions, downloads) = self.decide(&graph, &drvs, &target_nodes, &subst)?;
            if self.download(&downloads, &subst, &mut report)? {
                break decisions;
            }
        };
        report.not_substituted = subst
            .reasons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut steps: BTreeMap<NodeIndex, Step> = BTreeMap::new();
        for (n, kind) in decisions {
            let d = &drvs[&n];
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
        // A step is done: its users with no other input left become ready.
        let release = |n: NodeIndex,
                       waiting: &mut BTreeMap<NodeIndex, usize>,
                       ready: &mut VecDeque<NodeIndex>| {
            for user in graph.neighbors_directed(n, Direction::Outgoing) {
                if let Some(c) = waiting.get_mut(&user) {
                    *c -= 1;
                    if *c == 0 {
                        waiting.remove(&user);
                        ready.push_back(user);
                    }
                }
            }
        };
        let jobs = self.options.jobs.max(1);
        let mut running: BTreeMap<NodeIndex, Arc<AtomicBool>> = BTreeMap::new();
        let mut stopping = false;
        let (tx, rx) = mpsc::channel::<(NodeIndex, Result<Built, BuildError>)>();
        std::thread::scope(|s| loop {
            if self.options.cancel.is_cancelled() && !stopping {
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
                    release(n, &mut waiting, &mut ready);
                }
                Ok(Built::Checked(outputs)) => {
                    // The registered outputs stay; what uses them can go on (a
                    // checked image whose package is checked too).
                    release(n, &mut waiting, &mut ready);
                    report
                        .checked
                        .extend(outputs.into_iter().map(|c| CheckedOutput {
                            drv: step.drv_path.clone(),
                            output: c.output,
                            expected: c.expected,
                            actual: c.actual,
                            rebuilt: c.rebuilt,
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

    /// Walk down from the targets: a derivation whose outputs are valid needs
    /// nothing; one whose missing outputs (and what they reference) the caches have
    /// is downloaded, and its inputs are not needed; the rest is built, and its
    /// inputs are needed in turn.
    #[allow(clippy::type_complexity)]
    fn decide(
        &self,
        graph: &DiGraph<StorePath, ()>,
        drvs: &BTreeMap<NodeIndex, Derivation>,
        targets: &BTreeSet<NodeIndex>,
        subst: &Substituter<'_>,
    ) -> Result<
        (
            BTreeMap<NodeIndex, StepKind>,
            Vec<(StorePath, (usize, buildit_store::narinfo::NarInfo))>,
        ),
        BuildError,
    > {
        let mut decisions = BTreeMap::new();
        let mut downloads = Vec::new();
        let mut planned: BTreeSet<StorePath> = BTreeSet::new();
        let mut seen = BTreeSet::new();
        // Level by level from the targets: the missing outputs of one level are
        // looked up together (16 in flight); a level below is asked about only
        // when something above it must be built.
        let mut level: Vec<NodeIndex> = targets.iter().copied().collect();
        let mut stack: Vec<NodeIndex> = Vec::new();
        loop {
            if stack.is_empty() {
                level.retain(|n| !seen.contains(n));
                level.sort();
                level.dedup();
                if level.is_empty() {
                    break;
                }
                let mut missing = Vec::new();
                for n in &level {
                    for o in drvs[n].outputs.values().filter_map(|o| o.path()) {
                        if !self.store.is_valid(o)? {
                            missing.push(o.clone());
                        }
                    }
                }
                subst.prefetch(&missing, 16);
                stack = std::mem::take(&mut level);
            }
            let Some(n) = stack.pop() else { continue };
            if !seen.insert(n) {
                continue;
            }
            let d = &drvs[&n];
            let mut invalid = Vec::new();
            for o in d.outputs.values() {
                match o.path() {
                    Some(p) if self.store.is_valid(p)? => {}
                    Some(p) => invalid.push(p.clone()),
                    None => {
                        return Err(BuildError::Invalid(format!(
                            "{}: an output has no path",
                            graph[n]
                        )))
                    }
                }
            }
            let inputs = || graph.neighbors_directed(n, Direction::Incoming);
            if invalid.is_empty() {
                if self.options.check && targets.contains(&n) {
                    decisions.insert(n, StepKind::Check);
                    level.extend(inputs());
                }
                continue;
            }
            if let Some(plan) = subst.plan(self.store, &invalid) {
                for (p, src) in plan {
                    if planned.insert(p.clone()) {
                        downloads.push((p, src));
                    }
                }
                continue;
            }
            let kind = match Kind::of(d) {
                Kind::FetchUrl => StepKind::Fetch,
                Kind::UnpackDeb | Kind::BuildRoot => StepKind::Builtin,
                Kind::Image => StepKind::Image,
                Kind::Package | Kind::Plain | Kind::UnknownBuiltin => StepKind::Build,
            };
            decisions.insert(n, kind);
            level.extend(inputs());
        }
        Ok((decisions, downloads))
    }

    /// Download `paths` in order; false when one failed (it is forgotten, so the
    /// next plan builds it instead).
    fn download(
        &self,
        paths: &[(StorePath, (usize, buildit_store::narinfo::NarInfo))],
        subst: &Substituter<'_>,
        report: &mut Report,
    ) -> Result<bool, BuildError> {
        for (path, (cache, info)) in paths {
            if self.store.is_valid(path)? {
                continue;
            }
            let start = Instant::now();
            let name = path.name().to_string();
            self.progress.event(Event::Started {
                drv: path,
                name: &name,
                kind: StepKind::Substitute,
            });
            let result = subst.caches[*cache].substitute(self.store, info, &|done| {
                self.progress.event(Event::Download {
                    drv: path,
                    done,
                    total: info.file_size,
                })
            });
            let why = result.as_ref().err().map(|e| e.to_string());
            self.progress.event(Event::Finished {
                drv: path,
                name: &name,
                kind: StepKind::Substitute,
                elapsed: start.elapsed(),
                result: match &why {
                    Some(w) => Err(w),
                    None => Ok(()),
                },
            });
            match result {
                Ok(_) => report.substituted.push(path.clone()),
                Err(e) => {
                    subst.forget(path, format!("{path}: {e}; building it instead"));
                    return Ok(false);
                }
            }
        }
        Ok(true)
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
        let result = match Builder::from_derivation(&step.drv) {
            Err(ContractError::UnknownBuiltin(builder)) => Err(BuildError::UnsupportedBuilder {
                drv: step.drv_path.clone(),
                builder,
            }),
            Err(e) => Err(BuildError::Failed {
                drv: step.drv_path.clone(),
                message: e.to_string(),
                log: None,
            }),
            Ok(b) => match super::builtins::builtin_of(&b) {
                Some(builtin) => builtin.build(self, &step.drv_path, &step.drv, check),
                None => {
                    let package = match &b {
                        Builder::Package(p) => Some(p),
                        _ => None,
                    };
                    self.build_sandboxed(&step.drv_path, &step.drv, package, check, cancel)
                }
            },
        };
        let reason = result.as_ref().err().map(|e| e.reason());
        let mismatch = match &result {
            Ok(Built::Checked(outs)) if outs.iter().any(|c| c.expected != c.actual) => {
                Some(super::events::CHECK_DIFFERS.to_string())
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

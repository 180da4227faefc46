//! The live IVR flows: loaded at start, watched, and swapped atomically on a valid edit.
//!
//! A call takes `current()` once when it starts and keeps that `Arc<FlowSet>` until it ends, so
//! an edit never changes a call in progress. A new version is checked as a whole before it is
//! installed; an invalid edit leaves the old version live, is logged with every diagnostic, counted
//! in `gateway_flows_reload_failures_total`, and shown by `/readyz`. Watching uses the `notify`
//! crate through its debouncer: editors write files in several steps, and one reload after the
//! burst is what an administrator means.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivr_flows::{FlowRegistry, FlowSet, diagnostic};
use serde::{Deserialize, Serialize};

/// `[ivr]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    /// The flow files administrators edit; watched and reloaded live.
    pub flows_dir: PathBuf,
    /// Watch `flows_dir` and apply valid edits without a restart.
    pub reload: bool,
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            flows_dir: PathBuf::from("ivr-flows/flows"),
            reload: true,
        }
    }
}

/// What `/readyz` shows about the flows.
#[derive(Debug, Clone, Serialize)]
pub struct FlowsStatus {
    pub dir: PathBuf,
    pub version: u64,
    pub flows: Vec<String>,
    /// The diagnostics of the last refused edit, until a valid edit replaces them.
    pub rejected_edit: Option<String>,
}

#[derive(Debug)]
pub struct LiveFlows {
    registry: FlowRegistry,
    dir: PathBuf,
    status: Mutex<FlowsStatus>,
    /// What the directory looked like at the last load attempt. Reading the files to check them
    /// raises file-access events of its own; comparing fingerprints keeps those from triggering
    /// another reload.
    fingerprint: Mutex<Vec<(PathBuf, u64, Option<std::time::SystemTime>)>>,
}

/// Names, sizes and modification times of every file below `dir`, sorted.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push((entry.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

fn names(set: &FlowSet) -> Vec<String> {
    let mut v: Vec<String> = set.flow_names().map(str::to_owned).collect();
    v.sort();
    v
}

impl LiveFlows {
    /// Load `dir`; an invalid directory is an error that lists every diagnostic.
    pub fn load(dir: &Path) -> anyhow::Result<Arc<LiveFlows>> {
        let registry = FlowRegistry::load(dir).map_err(|d| {
            anyhow::anyhow!(
                "the IVR flows in {} are invalid:\n{}",
                dir.display(),
                diagnostic::render(&d)
            )
        })?;
        let set = registry.current();
        metrics::gauge!("gateway_flows_version").set(set.version() as f64);
        Ok(Arc::new(LiveFlows {
            status: Mutex::new(FlowsStatus {
                dir: dir.to_owned(),
                version: set.version(),
                flows: names(&set),
                rejected_edit: None,
            }),
            registry,
            dir: dir.to_owned(),
            fingerprint: Mutex::new(fingerprint(dir)),
        }))
    }

    /// The version new calls start on.
    pub fn current(&self) -> Arc<FlowSet> {
        self.registry.current()
    }

    pub fn status(&self) -> FlowsStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reload when a file below the directory changed since the last attempt; `None` when
    /// nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<u64, String>> {
        let now = fingerprint(&self.dir);
        {
            let mut last = match self.fingerprint.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            if *last == now {
                return None;
            }
            *last = now;
        }
        Some(self.reload())
    }

    /// Check the directory again and install it if it is valid.
    pub fn reload(&self) -> Result<u64, String> {
        let result = self.registry.try_reload(&self.dir);
        let mut status = match self.status.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        match result {
            Ok(version) => {
                let set = self.registry.current();
                status.version = version;
                status.flows = names(&set);
                status.rejected_edit = None;
                metrics::gauge!("gateway_flows_version").set(version as f64);
                metrics::counter!("gateway_flows_reloads_total").increment(1);
                tracing::info!(version, dir = %self.dir.display(), "IVR flows reloaded");
                Ok(version)
            }
            Err(diags) => {
                let text = diagnostic::render(&diags);
                metrics::counter!("gateway_flows_reload_failures_total").increment(1);
                tracing::error!(
                    dir = %self.dir.display(),
                    live_version = status.version,
                    "IVR flow edit refused; the previous version stays live:\n{text}"
                );
                status.rejected_edit = Some(text.clone());
                Err(text)
            }
        }
    }

    /// Watch the directory until the returned watcher is dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<impl Drop + use<>> {
        use notify_debouncer_mini::{new_debouncer, notify::RecursiveMode};
        let me = Arc::clone(self);
        let mut debouncer = new_debouncer(Duration::from_millis(300), move |events| {
            if let Ok(events) = events {
                let events: Vec<notify_debouncer_mini::DebouncedEvent> = events;
                if !events.is_empty() {
                    let _ = me.reload_if_changed();
                }
            }
        })?;
        debouncer
            .watcher()
            .watch(&self.dir, RecursiveMode::Recursive)?;
        tracing::info!(dir = %self.dir.display(), "watching IVR flows");
        Ok(debouncer)
    }
}

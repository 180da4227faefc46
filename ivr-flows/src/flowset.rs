//! Loading a whole directory of flows into one immutable, checked `FlowSet`, and the
//! `FlowRegistry` that swaps sets atomically on reload.
//!
//! A reload either installs a fully checked new set or changes nothing: sessions keep the
//! `Arc<FlowSet>` they started with, so an edit never half-applies to a call in progress.

use crate::calendar::Calendar;
use crate::check;
use crate::decode::Decoder;
use crate::diagnostic::{Diagnostic, Pos};
use crate::model::Flow;
use crate::yaml;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The calendar file name inside a flows directory.
pub const CALENDAR_FILE: &str = "calendar.yaml";

/// The longest value an input may have, in characters.
pub const MAX_INPUT_CHARS: usize = 512;

/// Why the variables given to a flow (an outbound call's `vars`) cannot start it; see
/// [`FlowSet::check_inputs`]. `Display` names the flow or the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The set has no flow of this name.
    UnknownFlow(String),
    /// A variable the flow does not list in its `inputs:`.
    Undeclared(String),
    /// An input the flow lists in its `inputs:` that was not given.
    Missing(String),
    /// A value the flow cannot take: the input's name and why (too long, control characters).
    BadValue(String, String),
}

impl InputError {
    /// The variable concerned (`None` for [`InputError::UnknownFlow`]).
    pub fn name(&self) -> Option<&str> {
        match self {
            InputError::UnknownFlow(_) => None,
            InputError::Undeclared(n) | InputError::Missing(n) | InputError::BadValue(n, _) => {
                Some(n)
            }
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::UnknownFlow(flow) => write!(f, "no flow named \"{flow}\""),
            InputError::Undeclared(n) => {
                write!(
                    f,
                    "\"{n}\" is not an input of the flow (not in its `inputs:`)"
                )
            }
            InputError::Missing(n) => write!(f, "input \"{n}\" is missing"),
            InputError::BadValue(n, why) => write!(f, "input \"{n}\" {why}"),
        }
    }
}

impl std::error::Error for InputError {}

/// Why `value` cannot be an input value, as the end of "input \"x\" ...".
fn bad_value(value: &str) -> Option<String> {
    let len = value.chars().count();
    if len > MAX_INPUT_CHARS {
        return Some(format!(
            "is {len} characters long (at most {MAX_INPUT_CHARS})"
        ));
    }
    value
        .chars()
        .find(|c| c.is_control())
        .map(|c| format!("contains a control character (U+{:04X})", u32::from(c)))
}

/// Every flow of a directory, checked as a whole.
#[derive(Debug, Clone)]
pub struct FlowSet {
    flows: BTreeMap<String, Flow>,
    calendar: Calendar,
    dir: Option<PathBuf>,
    version: u64,
}

impl FlowSet {
    /// A flow by name.
    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.get(name)
    }

    /// Flow names.
    pub fn flow_names(&self) -> impl Iterator<Item = &str> {
        self.flows.keys().map(String::as_str)
    }

    /// The holiday calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The directory it was loaded from (None for in-memory sets).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The registry version (0 for sets not loaded through a registry).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether `vars` can start `flow` (what [`crate::Session::set_inputs`] will accept), for
    /// refusing a request before anything is dialled: every name must be listed in the flow's
    /// `inputs:`, every listed input must be given, and each value must be at most
    /// [`MAX_INPUT_CHARS`] characters without control characters (an empty value is allowed).
    /// Reports the first problem: given names in name order, then missing inputs in
    /// `inputs:` order.
    pub fn check_inputs(
        &self,
        flow: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<(), InputError> {
        let f = self
            .flow(flow)
            .ok_or_else(|| InputError::UnknownFlow(flow.to_string()))?;
        for (name, value) in vars {
            if !f.inputs.contains(name) {
                return Err(InputError::Undeclared(name.clone()));
            }
            if let Some(why) = bad_value(value) {
                return Err(InputError::BadValue(name.clone(), why));
            }
        }
        match f.inputs.iter().find(|n| !vars.contains_key(*n)) {
            Some(n) => Err(InputError::Missing(n.clone())),
            None => Ok(()),
        }
    }
}

/// Loads and checks in-memory sources: `(file name, text)` pairs plus an optional calendar.
/// `audio_exists` answers for audio paths relative to the flows directory.
pub fn check_sources(
    files: &[(String, String)],
    calendar: Option<&str>,
    audio_exists: &dyn Fn(&str) -> bool,
) -> Result<FlowSet, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut flows: BTreeMap<String, Flow> = BTreeMap::new();
    let cal = match calendar.map(|c| Calendar::parse(CALENDAR_FILE, c)) {
        Some(Err(d)) => {
            diags.extend(d);
            Calendar::default()
        }
        Some(Ok(c)) => c,
        None => Calendar::default(),
    };
    for (file, text) in files {
        let stem = file
            .rsplit('/')
            .next()
            .unwrap_or(file)
            .trim_end_matches(".yaml")
            .trim_end_matches(".yml");
        let root = match yaml::parse(file, text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                diags.push(Diagnostic::new(
                    file.clone(),
                    Pos::new(1, 1),
                    "the file is empty",
                    "write a flow with `start:` and `steps:`",
                ));
                continue;
            }
            Err(d) => {
                diags.extend(d);
                continue;
            }
        };
        let mut dec = Decoder::new(file);
        let flow = dec.flow(stem, &root);
        diags.extend(dec.diags);
        if let Some(flow) = flow {
            if let Some(other) = flows.get(&flow.name) {
                diags.push(Diagnostic::new(
                    file.clone(),
                    Pos::new(1, 1),
                    format!("flow name \"{}\" is also used by {}", flow.name, other.file),
                    "give each flow a unique name",
                ));
                continue;
            }
            flows.insert(flow.name.clone(), flow);
        }
    }
    if diags.is_empty() {
        diags = check::check(&flows, audio_exists);
    }
    if diags.is_empty() {
        Ok(FlowSet {
            flows,
            calendar: cal,
            dir: None,
            version: 0,
        })
    } else {
        Err(diags)
    }
}

/// Checks a single flow file from text, without audio checks. Never panics: this is the
/// entry point for fuzz targets.
pub fn check_source(name: &str, text: &str) -> Result<FlowSet, Vec<Diagnostic>> {
    check_sources(&[(name.to_string(), text.to_string())], None, &|_| true)
}

/// Loads every `*.yaml` flow in `dir` (plus `calendar.yaml`) and checks them as a whole.
pub fn check_dir(dir: impl AsRef<Path>) -> Result<FlowSet, Vec<Diagnostic>> {
    let dir = dir.as_ref();
    let io_err = |what: &str, e: std::io::Error| {
        vec![Diagnostic::new(
            dir.display().to_string(),
            Pos::new(1, 1),
            format!("cannot read {what}: {e}"),
            "check the path and permissions",
        )]
    };
    let mut files = Vec::new();
    let mut calendar = None;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err("the flows directory", e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&name, e))?;
        if name == CALENDAR_FILE {
            calendar = Some(text);
        } else {
            files.push((name, text));
        }
    }
    let root = dir.to_path_buf();
    let exists = move |rel: &str| !rel.contains("..") && root.join(rel).is_file();
    let mut set = check_sources(&files, calendar.as_deref(), &exists)?;
    set.dir = Some(dir.to_path_buf());
    Ok(set)
}

/// Holds the live `FlowSet`; reloads swap it atomically and only when the new set is clean.
#[derive(Debug)]
pub struct FlowRegistry {
    current: RwLock<Arc<FlowSet>>,
}

impl FlowRegistry {
    /// A registry serving `set` as version 1.
    pub fn new(mut set: FlowSet) -> Self {
        set.version = 1;
        FlowRegistry {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// Loads `dir` as version 1.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, Vec<Diagnostic>> {
        check_dir(dir).map(Self::new)
    }

    /// The live set; new calls should start on it.
    pub fn current(&self) -> Arc<FlowSet> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Installs an already checked set; returns its version.
    pub fn install(&self, mut set: FlowSet) -> u64 {
        let mut guard = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        set.version = guard.version + 1;
        let v = set.version;
        *guard = Arc::new(set);
        v
    }

    /// Re-reads `dir`; on success installs it and returns the new version, on error keeps the
    /// old set live and returns the diagnostics.
    pub fn try_reload(&self, dir: impl AsRef<Path>) -> Result<u64, Vec<Diagnostic>> {
        check_dir(dir).map(|set| self.install(set))
    }
}

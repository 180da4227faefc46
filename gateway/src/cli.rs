//! `gateway flows check|simulate|graph`: the administrators' tools for flow files.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::bail;
use ivr_flows::{FlowSet, SimOptions, check_dir, diagnostic, mermaid, simulate_with};

/// Load and check `dir`. Diagnostics go to stderr as `DIR/FILE:LINE:COL: error: ...` (paths as
/// the user typed them, so editors and terminals can jump to them); the error says how many.
fn load(dir: &Path) -> anyhow::Result<FlowSet> {
    if !dir.is_dir() {
        bail!("{} is not a directory of flow files", dir.display());
    }
    check_dir(dir).map_err(|mut diags| {
        for d in &mut diags {
            d.file = dir.join(&d.file).display().to_string();
        }
        eprint!("{}", diagnostic::render(&diags));
        let n = diags.len();
        anyhow::anyhow!(
            "{n} error{} in {}",
            if n == 1 { "" } else { "s" },
            dir.display()
        )
    })
}

/// Check every flow; print what was found. Errors go to the caller (exit 1).
pub fn check(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let set = load(dir)?;
    let mut names: Vec<&str> = set.flow_names().collect();
    names.sort_unstable();
    writeln!(
        out,
        "ok: {} flows in {} ({})",
        names.len(),
        dir.display(),
        names.join(", ")
    )?;
    Ok(())
}

fn known(set: &FlowSet, flow: &str) -> anyhow::Result<()> {
    if set.flow(flow).is_none() {
        let mut names: Vec<&str> = set.flow_names().collect();
        names.sort_unstable();
        bail!(
            "there is no flow {flow:?}; the flows are: {}",
            names.join(", ")
        );
    }
    Ok(())
}

/// Walk a flow from the terminal: keys, `say: words`, `wait`, `hangup` (see the prompt).
pub fn simulate(
    dir: &Path,
    flow: &str,
    options: &SimOptions,
    input: impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let set = load(dir)?;
    known(&set, flow)?;
    writeln!(
        out,
        "# simulating {flow:?}: type keys (1, 123#), `say: 我要投诉`, `!1` to barge in, `wait` for a timeout, `fail`, `hangup`"
    )?;
    simulate_with(Arc::new(set), flow, options, input, out)?;
    Ok(())
}

/// Print a flow as a Mermaid diagram.
pub fn graph(dir: &Path, flow: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let set = load(dir)?;
    known(&set, flow)?;
    out.write_all(mermaid(&set, flow).as_bytes())?;
    Ok(())
}

//! CPU time of a process from `/proc/PID/stat` (user + system, all threads), Linux only.

use std::collections::BTreeMap;
use std::time::Duration;

/// Clock ticks per second of `/proc` times; 100 on every mainstream Linux.
const CLK_TCK: f64 = 100.0;

/// User and system CPU time of `pid` (or of this process with `None`); `None` when unreadable.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    parse_stat(&stat)
}

/// CPU time per thread name of `pid` (threads of the same name summed), e.g. `gateway` for the
/// tokio workers and `sqlite-writer` for the store's writer.
pub fn thread_times(pid: u32) -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let name = match (stat.find('('), stat.rfind(')')) {
            (Some(a), Some(b)) if a < b => stat[a + 1..b].to_owned(),
            _ => continue,
        };
        if let Some(t) = parse_stat(&stat) {
            *out.entry(name).or_default() += t;
        }
    }
    out
}

/// `end - start` per thread name.
pub fn thread_delta(
    start: &BTreeMap<String, Duration>,
    end: &BTreeMap<String, Duration>,
) -> BTreeMap<String, Duration> {
    end.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(start.get(k).copied().unwrap_or_default()),
            )
        })
        .collect()
}

fn parse_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / CLK_TCK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "42 (my gate way) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat(line), Some(Duration::from_secs(3)));
        assert!(cpu_time(None).is_some());
    }
}

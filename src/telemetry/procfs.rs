//! Process and host CPU telemetry from procfs: `/proc/self/stat` (CPU time),
//! `/proc/self/status` (resident memory, threads), `/proc/self/fd` (open files) and
//! `/proc/stat` (host CPU busy share).

use std::path::PathBuf;
use std::time::Instant;

use super::gauges::Gauges;
use super::Source;
use crate::metrics::{
    DEVICE_CPU_UTILIZATION, PROCESS_CPU_UTILIZATION, PROCESS_OPEN_FDS,
    PROCESS_RESIDENT_MEMORY_BYTES, PROCESS_THREADS,
};

/// CPU times of this process, in clock ticks (`/proc/self/stat` fields 14 and 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfStat {
    /// User time, ticks.
    pub utime: u64,
    /// System time, ticks.
    pub stime: u64,
}

/// Parses `/proc/self/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_self_stat(text: &str) -> Result<SelfStat, String> {
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or("no ')' closing the command name")?;
    // After the name: field 3 (state) is index 0, so utime (14) is 11, stime (15) 12.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |index: usize, name: &str| -> Result<u64, String> {
        fields
            .get(index)
            .ok_or_else(|| format!("{name}: missing field"))?
            .parse()
            .map_err(|e| format!("{name}: {e}"))
    };
    Ok(SelfStat {
        utime: field(11, "utime")?,
        stime: field(12, "stime")?,
    })
}

/// What `/proc/self/status` says about memory and threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Resident set size, bytes (`VmRSS`).
    pub resident_bytes: u64,
    /// Threads (`Threads`).
    pub threads: u64,
}

/// Parses `/proc/self/status`.
pub fn parse_status(text: &str) -> Result<Status, String> {
    let mut status = Status::default();
    let mut found = (false, false);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "VmRSS" => {
                let kib = value
                    .strip_suffix("kB")
                    .ok_or_else(|| format!("VmRSS: expected a kB value, got {value:?}"))?
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| format!("VmRSS: {e}"))?;
                status.resident_bytes = kib * 1024;
                found.0 = true;
            }
            "Threads" => {
                status.threads = value.parse().map_err(|e| format!("Threads: {e}"))?;
                found.1 = true;
            }
            _ => {}
        }
    }
    match found {
        (true, true) => Ok(status),
        (false, _) => Err("no VmRSS line".into()),
        (_, false) => Err("no Threads line".into()),
    }
}

/// Host CPU times summed over all cores (the `cpu` line of `/proc/stat`), in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Idle and iowait.
    pub idle: u64,
    /// Every field (guest time is already inside user/nice).
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat_cpu(text: &str) -> Result<CpuTimes, String> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no aggregate 'cpu' line")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u64>().map_err(|e| format!("cpu line: {e}")))
        .collect::<Result<_, _>>()?;
    if values.len() < 4 {
        return Err(format!(
            "cpu line: {} fields, expected at least 4",
            values.len()
        ));
    }
    // user nice system idle iowait irq softirq steal guest guest_nice
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    let total = values.iter().take(8).sum();
    Ok(CpuTimes { idle, total })
}

/// Clock ticks per second of procfs times: the kernel reports them in USER_HZ, which
/// is 100 on every Linux architecture mica runs on (x86_64, aarch64).
const USER_HZ: f64 = 100.0;

/// Samples procfs.
pub struct ProcSource {
    root: PathBuf,
    ticks_per_second: f64,
    last: Option<(Instant, SelfStat, Option<CpuTimes>)>,
    gauges: Gauges,
}

impl ProcSource {
    /// Reads procfs under `root` (normally `/proc`).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            ticks_per_second: USER_HZ,
            last: None,
            gauges: Gauges::default(),
        }
    }

    fn read(&self, path: &str) -> Result<String, String> {
        let path = self.root.join(path);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Source for ProcSource {
    fn name(&self) -> &'static str {
        "procfs"
    }

    fn sample(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let stat = parse_self_stat(&self.read("self/stat")?)?;
        let status = parse_status(&self.read("self/status")?)?;
        let host = self.read("stat").and_then(|t| parse_proc_stat_cpu(&t)).ok();
        self.gauges.set(
            PROCESS_RESIDENT_MEMORY_BYTES,
            &[],
            status.resident_bytes as f64,
        );
        self.gauges.set(PROCESS_THREADS, &[], status.threads as f64);
        if let Ok(entries) = std::fs::read_dir(self.root.join("self/fd")) {
            self.gauges
                .set(PROCESS_OPEN_FDS, &[], entries.count() as f64);
        }
        if let Some((then, last, last_host)) = self.last {
            let wall = now.duration_since(then).as_secs_f64();
            let ticks = (stat.utime + stat.stime).saturating_sub(last.utime + last.stime);
            if wall > 0.0 {
                let cpu = ticks as f64 / self.ticks_per_second / wall;
                self.gauges.set(PROCESS_CPU_UTILIZATION, &[], cpu);
            }
            if let (Some(host), Some(last_host)) = (host, last_host) {
                let total = host.total.saturating_sub(last_host.total);
                let idle = host.idle.saturating_sub(last_host.idle);
                if total > 0 {
                    let busy = 1.0 - idle as f64 / total as f64;
                    self.gauges.set(
                        DEVICE_CPU_UTILIZATION,
                        &[("device", "cpu")],
                        busy.clamp(0.0, 1.0),
                    );
                }
            }
        }
        self.last = Some((now, stat, host));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_stat_counts_fields_after_the_command_name() {
        let text = "4242 (mica (serve) x) S 1 4242 4242 0 -1 4194560 5000 0 3 0 \
                    1234 567 0 0 20 0 12 0 99 1000000 2000 18446744073709551615";
        assert_eq!(
            parse_self_stat(text).unwrap(),
            SelfStat {
                utime: 1234,
                stime: 567
            }
        );
        assert!(parse_self_stat("4242 mica S").is_err());
    }

    #[test]
    fn status_reads_rss_and_threads() {
        let text = "Name:\tmica\nState:\tS (sleeping)\nVmPeak:\t  900000 kB\n\
                    VmRSS:\t  123456 kB\nRssAnon:\t 100000 kB\nThreads:\t17\n";
        assert_eq!(
            parse_status(text).unwrap(),
            Status {
                resident_bytes: 123_456 * 1024,
                threads: 17
            }
        );
        assert!(parse_status("Name:\tmica\n").unwrap_err().contains("VmRSS"));
    }

    #[test]
    fn proc_stat_sums_the_aggregate_line() {
        let text = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 50 2 25 400 10 0 1 1 0 0\nintr 1\n";
        let times = parse_proc_stat_cpu(text).unwrap();
        assert_eq!(times.idle, 820);
        assert_eq!(times.total, 981);
        assert!(parse_proc_stat_cpu("intr 1\n").is_err());
    }

    #[test]
    fn samples_this_process() {
        let mut source = ProcSource::new(PathBuf::from("/proc"));
        source.sample().unwrap();
        source.sample().unwrap();
    }
}

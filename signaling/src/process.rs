//! Process-level gauges for `/metrics`, read from `/proc/self` (Linux), with the names the
//! Prometheus client libraries use, so dashboards and the load tool can read them anywhere.

use std::fmt::Write as _;

/// Linux reports CPU time in USER_HZ ticks, fixed at 100 per second by the kernel ABI.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub threads: u64,
}

impl ProcessStats {
    /// `None` where `/proc` is not available (not Linux).
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may contain spaces: count fields after its ')'.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // after_name starts at field 3 (state); utime is field 14, stime 15, threads 20.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let cpu_ticks = field(14)? + field(15)?;
        let threads = field(20)?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let resident_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(ProcessStats {
            cpu_seconds: cpu_ticks as f64 / TICKS_PER_SECOND,
            resident_bytes: resident_kib * 1024,
            open_fds,
            threads,
        })
    }

    pub fn render(&self, alive_tasks: usize) -> String {
        let mut text = String::new();
        let rows: [(&str, &str, &str, String); 5] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time of the server process.",
                format!("{}", self.cpu_seconds),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the server process.",
                self.resident_bytes.to_string(),
            ),
            (
                "process_open_fds",
                "gauge",
                "Open file descriptors of the server process.",
                self.open_fds.to_string(),
            ),
            (
                "process_threads",
                "gauge",
                "Threads of the server process.",
                self.threads.to_string(),
            ),
            (
                "roomcast_tokio_alive_tasks",
                "gauge",
                "Tasks alive on the HTTP/signaling runtime (two per open WebSocket, plus listeners).",
                alive_tasks.to_string(),
            ),
        ];
        for (name, kind, help, value) in rows {
            // Writing to a String cannot fail.
            let _ = write!(
                text,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read().expect("tests run on Linux");
        assert!(stats.resident_bytes > 1024 * 1024);
        assert!(stats.open_fds >= 3);
        assert!(stats.threads >= 1);
        assert!(stats.render(2).contains("roomcast_tokio_alive_tasks 2\n"));
    }
}

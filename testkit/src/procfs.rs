//! What the benches read from `/proc`: CPU time, resident memory, machine-wide CPU, load, child
//! processes. Linux only, as the node is.

use anyhow::Context as _;

/// Which process to read: this one or another by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    This,
    Of(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::This => "/proc/self".to_owned(),
            Pid::Of(pid) => format!("/proc/{pid}"),
        }
    }
}

/// Clock ticks per second of the times in `/proc/*/stat` and `/proc/stat`.
pub fn clock_ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// User + system CPU seconds `pid` has used so far (all its threads).
pub fn cpu_seconds(pid: Pid) -> anyhow::Result<f64> {
    let path = format!("{}/stat", pid.dir());
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&stat).map(|ticks| ticks / clock_ticks()).with_context(|| format!("unexpected {path}: {stat}"))
}

/// Sum of [`cpu_seconds`] over `pids`; processes that have exited count as zero.
pub fn cpu_seconds_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&pid| cpu_seconds(Pid::Of(pid)).ok()).sum()
}

/// utime + stime (fields 14 and 15) of a `stat` file, in ticks.
fn parse_cpu_ticks(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces and parentheses) start at field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)? + field(15)?) as f64)
}

/// The parent pid (field 4) of `pid`, if it still runs.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Resident memory of `pid` (`VmRSS`), in KiB.
pub fn rss_kib(pid: Pid) -> anyhow::Result<u64> {
    let path = format!("{}/status", pid.dir());
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS (has the process exited?)")?;
    line.split_whitespace().nth(1).context("malformed VmRSS")?.parse().context("malformed VmRSS")
}

/// Sum of [`rss_kib`] over `pids`, in bytes; processes that have exited count as zero.
pub fn rss_bytes_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&pid| rss_kib(Pid::Of(pid)).ok()).sum::<u64>() as f64 * 1024.0
}

/// The processes whose parent is `pid` (nginx's workers under its master, say).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut children: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .collect();
    children.sort_unstable();
    children
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` says them (`?` if unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// This process's soft limit on open files.
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// CPU time the whole machine has used so far (the `cpu` line of `/proc/stat`), so that a run can
/// say how much went elsewhere than the processes it measures.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    /// Processes, user + system, in seconds.
    pub tasks: f64,
    /// Interrupt and softirq time that the kernel accounts to no process (with
    /// `CONFIG_IRQ_TIME_ACCOUNTING`, loopback TCP delivery lands here), in seconds.
    pub irq: f64,
}

impl MachineCpu {
    pub fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat.lines().next().filter(|l| l.starts_with("cpu ")).context("no cpu line in /proc/stat")?;
        let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
        let ticks = clock_ticks();
        let sum = |fields: &[usize]| fields.iter().map(|&i| v.get(i).copied().unwrap_or(0)).sum::<u64>() as f64 / ticks;
        // user nice system idle iowait irq softirq steal (guest time is already in user; steal is
        // time the hypervisor did not give us, no one's use here).
        Ok(MachineCpu { tasks: sum(&[0, 1, 2]), irq: sum(&[5, 6]) })
    }

    /// (irq, other processes) seconds since `self`, given the CPU seconds of the measured ones.
    pub fn since(self, measured: f64) -> anyhow::Result<(f64, f64)> {
        let now = MachineCpu::now()?;
        Ok((now.irq - self.irq, (now.tasks - self.tasks - measured).max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_memory_and_children_of_real_processes() {
        let stat = "42 (a (strange) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300.0));
        // Burn a little CPU so the counter cannot be zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(Pid::This).unwrap() > 0.0);
        assert!(rss_kib(Pid::This).unwrap() > 0);
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(children(std::process::id()).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(MachineCpu::now().unwrap().tasks > 0.0);
        assert!(open_file_limit() > 0);
    }
}

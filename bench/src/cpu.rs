//! CPU time from `/proc`: of a process, of a core, of the machine. The report uses them to show
//! what limited a run and how much other work ran alongside it.

use std::time::{Duration, Instant};

/// utime + stime from `/proc/<pid>/stat` (all threads), in clock ticks converted to time.
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    ticks_to_time(ticks)
}

/// Busy and total time so far of one CPU, or of all (`None`), from `/proc/stat`.
pub fn cpu_busy_and_total(cpu: Option<usize>) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let prefix = cpu.map_or("cpu ".to_string(), |cpu| format!("cpu{cpu} "));
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    let total = ticks.iter().take(8).sum();
    Some((ticks_to_time(busy)?, ticks_to_time(total)?))
}

/// Waits, at most `max`, until the whole machine is nearly idle (under 10 % busy over 300 ms)
/// while nothing of ours runs, so another job's compile does not land in a measurement.
/// Returns how long it waited and whether it got quiet.
pub fn wait_for_quiet(max: Duration) -> (Duration, bool) {
    let started = Instant::now();
    loop {
        let before = cpu_busy_and_total(None);
        std::thread::sleep(Duration::from_millis(300));
        let after = cpu_busy_and_total(None);
        let busy_share = match (before, after) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                b1.saturating_sub(b0).as_secs_f64() / (t1 - t0).as_secs_f64()
            }
            _ => 0.0,
        };
        if busy_share < 0.10 {
            return (started.elapsed(), true);
        }
        if started.elapsed() >= max {
            return (started.elapsed(), false);
        }
    }
}

fn ticks_to_time(ticks: u64) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        let start = process_cpu_time(std::process::id()).expect("own /proc stat");
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(50);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let end = process_cpu_time(std::process::id()).expect("own /proc stat");
        assert!(end >= start);
        let (busy, total) = cpu_busy_and_total(Some(0)).expect("cpu0 in /proc/stat");
        assert!(busy <= total && total > Duration::ZERO);
    }
}

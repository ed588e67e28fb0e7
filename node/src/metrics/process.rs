//! The standard `process_*` metrics of Prometheus's client libraries (CPU time, memory, file
//! descriptors, threads, start time), read from `/proc/self` at scrape time. prometheus-client
//! has no process collector and the figures are a few numbers in three files, so they are
//! read here rather than through a further dependency.

/// What `/proc/self` says about this process now.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

/// Reads the figures; `None` where `/proc` is missing or unreadable (then the metrics are
/// left out rather than reported as zero).
pub fn read() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let mut figures = parse_stat(&stat, ticks.max(1) as f64, page.max(1) as u64, &boot)?;
    figures.open_fds = open_fds;
    figures.max_fds = parse_max_fds(&limits).unwrap_or(0);
    Some(figures)
}

/// `/proc/self/stat` (fields after the command's closing parenthesis, see proc(5)) and the
/// boot time from `/proc/stat`.
fn parse_stat(stat: &str, ticks: f64, page: u64, proc_stat: &str) -> Option<ProcessFigures> {
    // The command may contain spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // proc(5) numbers fields from 1 with the pid; fields[0] here is field 3 (state).
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let boot_time: u64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessFigures {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        threads: field(20)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        ..ProcessFigures::default()
    })
}

/// The soft limit on open files from `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command() {
        let stat = "1234 (ferry d) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        let figures = parse_stat(stat, 100.0, 4096, "cpu 1 2 3\nbtime 1700000000\n").unwrap();
        assert_eq!(figures.cpu_seconds, 3.0);
        assert_eq!(figures.threads, 7);
        assert_eq!(figures.start_time_seconds, 1_700_000_010.0);
        assert_eq!(figures.virtual_bytes, 123_456_789);
        assert_eq!(figures.resident_bytes, 300 * 4096);
    }

    #[test]
    fn this_process_has_figures() {
        let figures = read().expect("/proc is mounted where the tests run");
        assert!(figures.resident_bytes > 0 && figures.threads >= 1);
        assert!(figures.open_fds >= 3 && figures.max_fds >= figures.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(figures.start_time_seconds <= now + 1.0);
    }

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }
}

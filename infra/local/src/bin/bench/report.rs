use super::*;

pub(crate) fn per_1000(value: f64, images: u64) -> f64 {
    value * 1000.0 / images.max(1) as f64
}

pub(crate) fn f1(v: f64) -> String {
    format!("{v:.1}")
}

pub(crate) fn f2(v: f64) -> String {
    format!("{v:.2}")
}

pub(crate) fn f3(v: f64) -> String {
    format!("{v:.3}")
}

pub(crate) fn sum_matching(counts: &BTreeMap<String, u64>, ops: &[&str]) -> u64 {
    ops.iter()
        .map(|o| counts.get(*o).copied().unwrap_or(0))
        .sum()
}

/// The report, printed as it grows and written at the end.
pub(crate) struct Report {
    pub(crate) text: String,
}

impl Report {
    pub(crate) fn section(&mut self, title: &str, intro: &str) {
        let s = format!("\n## {title}\n\n{intro}\n\n");
        print!("{s}");
        self.text.push_str(&s);
    }
    pub(crate) fn table(&mut self, t: &Table) {
        let s = format!("{}\n", t.markdown());
        print!("{s}");
        self.text.push_str(&s);
    }
    pub(crate) fn para(&mut self, p: &str) {
        let s = format!("{p}\n\n");
        print!("{s}");
        self.text.push_str(&s);
    }
}

pub(crate) fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, {}",
        std::env::consts::OS
    )
}

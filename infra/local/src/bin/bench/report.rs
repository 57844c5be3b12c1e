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

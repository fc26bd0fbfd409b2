//! The table every bench prints: each figure next to a baseline measured in the same run
//! and their ratio, then its targets met or not. `benches/suite.sh` merges the tables of
//! all benches by these exact line shapes (`| … |` rows, `- …: **met**` targets).

// Each bench uses the part of this it needs.
#![allow(dead_code)]

/// One figure, its baseline and their ratio (figure / baseline).
pub struct Row {
    pub bench: String,
    pub figure: String,
    pub baseline: String,
    pub ratio: f64,
}

/// A target, met or not, printed after the table.
struct Target {
    what: String,
    met: bool,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    targets: Vec<Target>,
}

impl Report {
    /// Adds a row, and says it at once (a long run shows its progress).
    pub fn row(
        &mut self,
        bench: impl Into<String>,
        figure: impl Into<String>,
        baseline: impl Into<String>,
        ratio: f64,
    ) {
        self.push(Row { bench: bench.into(), figure: figure.into(), baseline: baseline.into(), ratio });
    }

    pub fn push(&mut self, row: Row) {
        println!("  {} | {} | {} | {:.2}", row.bench, row.figure, row.baseline, row.ratio);
        self.rows.push(row);
    }

    pub fn target(&mut self, what: impl Into<String>, met: bool) {
        let target = Target { what: what.into(), met };
        println!("  target {}: {}", target.what, if target.met { "met" } else { "NOT met" });
        self.targets.push(target);
    }

    /// The table, then the targets.
    pub fn print(&self) {
        println!();
        println!("| bench | figure | baseline (same run) | ratio |");
        println!("|---|---|---|---|");
        for row in &self.rows {
            println!("| {} | {} | {} | {:.2} |", row.bench, row.figure, row.baseline, row.ratio);
        }
        if !self.targets.is_empty() {
            println!();
        }
        for target in &self.targets {
            println!("- {}: **{}**", target.what, if target.met { "met" } else { "not met" });
        }
    }
}

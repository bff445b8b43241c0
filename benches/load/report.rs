//! One run's figures, printed as a human line and a JSON line, and the medians of repeated runs.

use std::time::Duration;

use crate::counting::Tally;

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Report {
    scenario: &'static str,
    workload: String,
    figures: Vec<(&'static str, f64)>,
}

impl Report {
    pub fn new(scenario: &'static str, workload: String) -> Report {
        Report {
            scenario,
            workload,
            figures: Vec::new(),
        }
    }

    pub fn put(&mut self, name: &'static str, value: f64) {
        self.figures.push((name, value));
    }

    /// What a fanout run delivered: the rate, losses, duplicates or reorderings, and whether
    /// the receivers (the tallies from `receivers` on) all saw one order. Returns the deliveries.
    pub fn put_deliveries(
        &mut self,
        tallies: &[Tally],
        receivers: usize,
        elapsed: Duration,
    ) -> u64 {
        let deliveries: u64 = tallies.iter().map(|t| t.payloads).sum();
        let orders: Vec<u64> = tallies
            .iter()
            .skip(receivers)
            .map(|t| t.order_hash)
            .collect();
        self.put(
            "deliveries_per_sec",
            deliveries as f64 / elapsed.as_secs_f64(),
        );
        self.put("lost", tallies.iter().map(Tally::lost).sum::<u64>() as f64);
        self.put(
            "duplicated_or_reordered",
            tallies.iter().map(|t| t.out_of_order).sum::<u64>() as f64,
        );
        self.put(
            "same_total_order",
            f64::from(u8::from(orders.windows(2).all(|w| w[0] == w[1]))),
        );
        self.put("seconds", elapsed.as_secs_f64());
        deliveries
    }

    pub fn human(&self) -> String {
        let figures: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v)| format!("{k}={}", pretty(*v)))
            .collect();
        format!(
            "{:8} {:42} {}",
            self.scenario,
            self.workload,
            figures.join(" ")
        )
    }

    pub fn json(&self) -> String {
        let figures: Vec<String> = self
            .figures
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!(
            "{{\"scenario\":\"{}\",\"workload\":\"{}\",{}}}",
            self.scenario,
            self.workload,
            figures.join(",")
        )
    }

    /// Groups runs by scenario and workload, in order of first appearance.
    pub fn group(reports: &[Report]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        for report in reports {
            match groups.iter_mut().find(|g| {
                g.runs[0].scenario == report.scenario && g.runs[0].workload == report.workload
            }) {
                Some(group) => group.runs.push(report.clone()),
                None => groups.push(Group {
                    runs: vec![report.clone()],
                }),
            }
        }
        groups
    }
}

pub struct Group {
    runs: Vec<Report>,
}

impl Group {
    fn medians(&self) -> Vec<(&'static str, f64)> {
        self.runs[0]
            .figures
            .iter()
            .map(|(name, _)| {
                let mut values: Vec<f64> = self
                    .runs
                    .iter()
                    .filter_map(|r| r.figures.iter().find(|(n, _)| n == name))
                    .map(|(_, v)| *v)
                    .collect();
                values.sort_by(f64::total_cmp);
                (*name, values[values.len() / 2])
            })
            .collect()
    }

    pub fn human_median(&self) -> String {
        let figures: Vec<String> = self
            .medians()
            .iter()
            .map(|(k, v)| format!("{k}={}", pretty(*v)))
            .collect();
        format!(
            "MEDIAN of {} {} {}: {}",
            self.runs.len(),
            self.runs[0].scenario,
            self.runs[0].workload,
            figures.join(" ")
        )
    }

    pub fn json_median(&self) -> String {
        let figures: Vec<String> = self
            .medians()
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!(
            "{{\"median_of\":{},\"scenario\":\"{}\",\"workload\":\"{}\",{}}}",
            self.runs.len(),
            self.runs[0].scenario,
            self.runs[0].workload,
            figures.join(",")
        )
    }
}

fn pretty(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

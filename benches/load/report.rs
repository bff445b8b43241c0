//! One run's figures, printed as a human line and a JSON line, and the medians of repeated runs.

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

//! The audit's findings: one line per check — PASS / WARN / FAIL, what was found, and for
//! WARN and FAIL the fix — then a summary. Exit 0 when nothing failed, 1 with warnings only,
//! 2 on any failure.

use serde::{Deserialize, Serialize};

use super::spf::Evaluation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// What was checked, e.g. `spf example.com` or `upstream email-smtp...:587`.
    pub check: String,
    pub status: Status,
    pub found: String,
    /// The record to add or the key to set; only for WARN and FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The sender domain the check is about (SPF, DMARC); none for the relay's own checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The `check_host` runs behind an SPF finding: address, result, lookups, voids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spf: Vec<Evaluation>,
}

impl Check {
    pub fn pass(check: impl Into<String>, found: impl Into<String>) -> Check {
        Check::new(check.into(), Status::Pass, found.into(), None)
    }

    pub fn warn(
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(check.into(), Status::Warn, found.into(), Some(fix.into()))
    }

    pub fn fail(
        check: impl Into<String>,
        found: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check::new(check.into(), Status::Fail, found.into(), Some(fix.into()))
    }

    fn new(check: String, status: Status, found: String, fix: Option<String>) -> Check {
        Check {
            check,
            status,
            found,
            fix,
            domain: None,
            spf: Vec::new(),
        }
    }

    /// The same finding, as one about sender domain `domain`.
    pub fn about(mut self, domain: &str) -> Check {
        self.domain = Some(domain.to_string());
        self
    }

    /// The same finding, with the SPF evaluations it rests on.
    pub fn with_evaluations(mut self, evaluations: Vec<Evaluation>) -> Check {
        self.spf = evaluations;
        self
    }

    /// The same finding, but no worse than a warning (for checks that do not decide delivery).
    pub fn at_most_warn(mut self, why: &str) -> Check {
        if self.status == Status::Fail {
            self.status = Status::Warn;
            self.found = format!("{} ({why})", self.found);
        }
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub passed: usize,
    pub warnings: usize,
    pub failures: usize,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        let count = |status| checks.iter().filter(|c| c.status == status).count();
        Report {
            passed: count(Status::Pass),
            warnings: count(Status::Warn),
            failures: count(Status::Fail),
            checks,
        }
    }

    pub fn exit_code(&self) -> u8 {
        if self.failures > 0 {
            2
        } else if self.warnings > 0 {
            1
        } else {
            0
        }
    }

    pub fn render(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        let mut out = String::new();
        for check in &self.checks {
            let status = match check.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{status}  {:<width$}  {}\n",
                check.check, check.found
            ));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("      {:<width$}  fix: {fix}\n", ""));
            }
        }
        out.push_str(&format!(
            "\n{} passed, {} warnings, {} failed\n",
            self.passed, self.warnings, self.failures
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_is_the_worst_status() {
        assert_eq!(Report::new(vec![Check::pass("a", "ok")]).exit_code(), 0);
        assert_eq!(
            Report::new(vec![Check::pass("a", "ok"), Check::warn("b", "hm", "do x")]).exit_code(),
            1
        );
        let report = Report::new(vec![
            Check::warn("b", "hm", "x"),
            Check::fail("c", "bad", "y"),
        ]);
        assert_eq!(report.exit_code(), 2);
        let text = report.render();
        assert!(
            text.contains("FAIL  c  bad\n") && text.contains("fix: y"),
            "{text}"
        );
        assert!(text.ends_with("0 passed, 1 warnings, 1 failed\n"));
        assert_eq!(
            Check::fail("c", "bad", "y")
                .at_most_warn("informational")
                .status,
            Status::Warn
        );
    }
}

//! The readiness verdict of `backstop.doctor()`: pure logic, so it is tested without a server.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do; present for every check that is not ok, and for an ok one that suggests
    /// something (`suggest`).
    pub hint: Option<String>,
}

impl Check {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Check { check, status: Status::Ok, detail: detail.into(), hint: None }
    }

    /// Ok, with something worth doing that does not change the verdict.
    pub fn suggest(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check { check, status: Status::Ok, detail: detail.into(), hint: Some(hint.into()) }
    }

    pub fn warn(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check { check, status: Status::Warn, detail: detail.into(), hint: Some(hint.into()) }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check { check, status: Status::Fail, detail: detail.into(), hint: Some(hint.into()) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ready,
    Degraded,
    NotReady,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::Degraded => "degraded",
            Verdict::NotReady => "not_ready",
        }
    }
}

/// Any failed check makes the cluster not ready; any warning makes it degraded. No checks at all is
/// not a proof of anything, so it is not ready either.
pub fn verdict(checks: &[Check]) -> Verdict {
    match checks.iter().map(|c| c.status).max() {
        None | Some(Status::Fail) => Verdict::NotReady,
        Some(Status::Warn) => Verdict::Degraded,
        Some(Status::Ok) => Verdict::Ready,
    }
}

/// The machine-readable report: verdict, a one-line reason, and every check.
pub fn report(checks: &[Check]) -> serde_json::Value {
    let verdict = verdict(checks);
    let worst: Vec<&str> = checks.iter().filter(|c| c.status != Status::Ok).map(|c| c.check).collect();
    let reason = match verdict {
        Verdict::Ready => "every check passed".to_string(),
        _ if checks.is_empty() => "no check ran".to_string(),
        Verdict::Degraded => format!("warnings from: {}", worst.join(", ")),
        Verdict::NotReady => format!(
            "failed: {}",
            checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.check).collect::<Vec<_>>().join(", ")
        ),
    };
    serde_json::json!({ "verdict": verdict, "reason": reason, "checks": checks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_check_decides_the_verdict() {
        let ok = Check::ok("a", "fine");
        let warn = Check::warn("b", "meh", "do x");
        let fail = Check::fail("c", "broken", "do y");
        assert_eq!(verdict(std::slice::from_ref(&ok)), Verdict::Ready);
        assert_eq!(verdict(&[ok.clone(), warn.clone()]), Verdict::Degraded);
        assert_eq!(verdict(&[warn.clone(), fail.clone(), ok.clone()]), Verdict::NotReady);
        assert_eq!(verdict(&[]), Verdict::NotReady);
    }

    #[test]
    fn report_names_failures_and_serialises_checks() {
        let report = report(&[Check::ok("a", "fine"), Check::fail("archive_mode", "off", "set it on")]);
        assert_eq!(report["verdict"], "not_ready");
        assert_eq!(report["reason"], "failed: archive_mode");
        assert_eq!(report["checks"][1]["status"], "fail");
        assert_eq!(report["checks"][1]["hint"], "set it on");
        assert_eq!(report["checks"][0]["hint"], serde_json::Value::Null);
    }
}

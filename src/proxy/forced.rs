//! Testers' forced cohort: `override_header: always` (or `never`) sends a request to the canary
//! (or stable) whatever its hash — only with the right token in `<override_header>-token`, so the
//! public cannot opt in. A wrong or missing token is ignored (the hash decides) and counted,
//! never an error page. Forced requests are counted apart and never judged: testers are not a
//! random sample of users.

use crate::cohort::Cohort;
use crate::config::ForcedCohort;
use crate::control::routing::{CanaryState, RoutingTable};
use crate::http::fields::Fields;

/// What a request's override fields ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    /// No override asked (or none configured): the hash decides.
    No,
    /// Asked with a wrong or missing token: the hash decides, and it is counted.
    Refused,
    /// Asked with the right token: this cohort.
    To(Cohort),
}

pub fn forced(rule: &ForcedCohort, fields: Fields<'_>, table: &RoutingTable) -> Forced {
    let Some(asked) = fields.get(&rule.header) else {
        return Forced::No;
    };
    let cohort = if asked.eq_ignore_ascii_case(b"always") {
        Cohort::Canary
    } else if asked.eq_ignore_ascii_case(b"never") {
        Cohort::Stable
    } else {
        return Forced::No;
    };
    let token = fields.get(&rule.token_header).unwrap_or_default();
    if !crate::http::secret_eq(token.trim_ascii(), rule.token.as_bytes()) {
        return Forced::Refused;
    }
    // At 0 % testers are the point (deploy dark, test by header, then ramp); after a rollback
    // the canary is off limits unless the operator lets testers in; a canary switched off
    // (`enabled = false`) or without endpoints is never forced.
    let reachable = match table.state {
        CanaryState::Active => true,
        CanaryState::RolledBack => rule.after_rollback,
        CanaryState::Disabled => table.config.canary.enabled,
    };
    match cohort {
        Cohort::Canary if !reachable || table.config.canary.endpoints.is_empty() => {
            Forced::To(Cohort::Stable)
        }
        c => Forced::To(c),
    }
}

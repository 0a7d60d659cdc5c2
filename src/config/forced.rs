//! `[canary] override_header` and its token, checked: testers' forced cohort. A forced cohort
//! without a token would let the public pick their version, so one is required.

use super::validate::Ctx;
use super::*;

/// `[canary] override_header`: a request carrying `header: always` (or `never`) and the right
/// token in `header-token` goes to the canary (or stable) whatever its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct ForcedCohort {
    pub header: http::HeaderName,
    pub token_header: http::HeaderName,
    pub token: String,
    /// After a rollback `always` still reaches the canary (a tester can see the broken build).
    pub after_rollback: bool,
}

/// `override_header` and its token: a forced cohort without a token would let the public opt
/// in, so one is required.
pub(super) fn validate(cx: &Ctx, c: &RawCanary) -> Result<Option<ForcedCohort>, ConfigError> {
    let name = c.override_header.trim();
    if name.is_empty() {
        return Ok(None);
    }
    let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        cx.err(
            "canary.override_header",
            format!("a header name such as \"x-canary\", got {name:?}"),
        )
    })?;
    let token_header = http::HeaderName::from_bytes(format!("{header}-token").as_bytes())
        .map_err(|_| cx.err("canary.override_header", "a shorter header name"))?;
    let token = cx
        .secret(
            ("canary.override_token", &c.override_token),
            ("canary.override_token_file", c.override_token_file.as_ref()),
            "the token",
        )?
        .unwrap_or_default();
    if token.len() < 8 {
        return Err(cx.err(
            "canary.override_token",
            "a token of at least 8 characters (or override_token_file, or CANARY_OVERRIDE_TOKEN): without one anyone could pick their cohort",
        ));
    }
    Ok(Some(ForcedCohort {
        header,
        token_header,
        token,
        after_rollback: c.override_after_rollback,
    }))
}

//! `canary.identity`: which sources name a client, in order, as the config writes them.

use http::header::HeaderName;

/// One entry of `canary.identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    Header(HeaderName),
    Cookie(String),
    Ip,
}

impl IdentitySource {
    /// Parses `header:NAME`, `cookie:NAME` or `ip`; the error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "ip" {
            return Ok(IdentitySource::Ip);
        }
        if let Some(name) = text.strip_prefix("header:") {
            return HeaderName::from_bytes(name.as_bytes())
                .map(IdentitySource::Header)
                .map_err(|_| format!("a valid header name after `header:`, got {text:?}"));
        }
        if let Some(name) = text.strip_prefix("cookie:") {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            return if valid {
                Ok(IdentitySource::Cookie(name.to_string()))
            } else {
                Err(format!("a valid cookie name after `cookie:`, got {text:?}"))
            };
        }
        Err(format!(
            "\"header:NAME\", \"cookie:NAME\" or \"ip\", got {text:?}"
        ))
    }

    pub fn render(&self) -> String {
        match self {
            IdentitySource::Header(h) => format!("header:{h}"),
            IdentitySource::Cookie(c) => format!("cookie:{c}"),
            IdentitySource::Ip => "ip".into(),
        }
    }
}

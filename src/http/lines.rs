//! Header lines as they came on the wire, copied on without a header map: the upstream's
//! response head towards the client (`response`), the client's request head towards the
//! upstream (`headers::write_upstream_fields`). Hop-by-hop fields and the names a `Connection`
//! field lists never go on; which others do is the caller's `Keep`.

/// An upstream's response head kept as it came, and the proxy's own fields to write with it.
#[derive(Debug, Clone)]
pub struct RawHead {
    /// Status line and header lines, as the upstream sent them.
    pub upstream: Bytes,
    /// The proxy's own fields, already rendered (`X-Deployment-*`, made once per routing
    /// table); an upstream field of the same name is then dropped.
    pub ours: Option<Bytes>,
}

use bytes::Bytes;

use crate::http::hop;

/// Which of a head's fields go on, besides the hop-by-hop rule every copy keeps.
pub trait Keep<'r> {
    /// Whether this field goes on (`value` as it came, blanks around it included). Called
    /// once per field in order, hop-by-hop fields excepted.
    fn keep(&mut self, name: &'r [u8], value: &'r [u8]) -> bool;
    /// The copy starts over from the first field: forget what the last pass saw.
    fn restart(&mut self);
}

/// Copies the fields of `raw` (a whole head: its first line is skipped) that go on into `out`,
/// each ending in CRLF.
pub fn copy_kept<'r>(out: &mut Vec<u8>, raw: &'r [u8], keep: &mut impl Keep<'r>) {
    let start = out.len();
    if copy(out, raw, keep, None).is_some() {
        return;
    }
    // A `Connection` field lists field names, which go too (rare: it usually lists options).
    out.truncate(start);
    keep.restart();
    let _ = copy(out, raw, keep, Some(raw));
}

/// One pass over the head's lines (`httparse` has checked them: `name: value`, ending in CRLF
/// or LF), copying runs of kept lines whole. `listed`: the head whose `Connection` lists names
/// to drop; without it, finding such a list gives `None`.
fn copy<'r>(
    out: &mut Vec<u8>,
    raw: &'r [u8],
    keep: &mut impl Keep<'r>,
    listed: Option<&[u8]>,
) -> Option<()> {
    // Skip the start line.
    let mut at = memchr::memchr(b'\n', raw)? + 1;
    let mut run = at;
    loop {
        let end = at + memchr::memchr(b'\n', &raw[at..])?;
        let line = &raw[at..end];
        let crlf = line.ends_with(b"\r");
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            out.extend_from_slice(&raw[run..at]);
            return Some(());
        }
        let colon = memchr::memchr(b':', line).unwrap_or(line.len());
        let (name, value) = (&line[..colon], line.get(colon + 1..).unwrap_or_default());
        let kept = if hop::is_hop_by_hop(name) {
            if name.eq_ignore_ascii_case(b"connection")
                && listed.is_none()
                && hop::lists_fields(value)
            {
                return None;
            }
            false
        } else {
            !listed.is_some_and(|head| in_connection(head, name)) && keep.keep(name, value)
        };
        if !kept {
            out.extend_from_slice(&raw[run..at]);
            run = end + 1;
        } else if !crlf {
            // A bare LF ends the line on the way in; ours end in CRLF.
            out.extend_from_slice(&raw[run..end]);
            out.extend_from_slice(b"\r\n");
            run = end + 1;
        }
        at = end + 1;
    }
}

/// The values of every `name` field of a whole head, in order, blanks trimmed.
pub fn values<'r>(raw: &'r [u8], name: &'r [u8]) -> impl Iterator<Item = &'r [u8]> + 'r {
    raw.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = memchr::memchr(b':', line)?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// Whether a `Connection` field of `head` lists `name`.
fn in_connection(head: &[u8], name: &[u8]) -> bool {
    values(head, b"connection").any(|v| hop::lists(v, name))
}

//! Whether a request's `:path` is in the normal form the upstream will read.
//!
//! authz chooses the policy from the path (`[[routes]]` prefixes). If Envoy hands it a path
//! that the MCP server decodes to something else (`/%74ools/mcp`, `//tools/mcp`,
//! `/x/../tools/mcp`, `/tools%2Fmcp`), a request meant for a guarded prefix is judged under
//! another policy. The shipped Envoy configs normalize paths first; a mesh that does not is
//! still safe, because a path that is not in normal form is refused (400) here.

/// `path` (with its query) is in normal form: it is empty or starts with `/`, has no empty,
/// `.` or `..` segment, no backslash, no `;` (Java servers drop `;params` and read `..;` as
/// `..`), and no percent-encoding of an unreserved character, a slash, a backslash, a `%` (a
/// double encoding) or a byte no UTF-8 text has (overlong `%C0%AE`), nor a malformed one. The
/// query is not looked at.
pub fn is_normal(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if path.contains(['\\', ';']) {
        return false;
    }
    // The root, or segments that are neither empty (except a trailing slash), `.` nor `..`.
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    escapes_are_needed(path)
}

/// Every `%XX` is well formed and stands for a character that had to be escaped.
fn escapes_are_needed(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                return false;
            };
            let decoded = u8::try_from(high * 16 + low).unwrap_or(0);
            let unreserved = decoded.is_ascii_alphanumeric() || b"-._~".contains(&decoded);
            let confusing = b"/\\%;".contains(&decoded) || matches!(decoded, 0xC0 | 0xC1 | 0xF5..);
            if unreserved || confusing {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests;

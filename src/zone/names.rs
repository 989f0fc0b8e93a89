//! Domain names: validation of configured names, and wire-format helpers.

/// Validate and normalise a domain name from config (`cluster.local`, `corp.example.`):
/// lowercase, no trailing dot, labels of 1 to 63 bytes, at most 253 bytes.
pub fn parse_domain(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('.');
    if t.is_empty() {
        return Err(format!(
            "{s:?} is not a domain name (the root is not allowed here)"
        ));
    }
    if t.len() > 253 {
        return Err(format!("{s:?} is longer than 253 bytes"));
    }
    for label in t.split('.') {
        if label.is_empty() {
            return Err(format!("{s:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{s:?} has a label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{s:?} has a label with characters other than letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(t.to_ascii_lowercase())
}

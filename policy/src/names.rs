//! Kubernetes name rules, so a bad label or env name fails at policy load, not at admission.

/// Checks a label value: at most 63 characters, empty or alphanumeric at both ends with
/// `-`, `_`, `.` inside.
pub fn check_label_value(v: &str) -> Result<(), String> {
    if v.len() > 63 {
        return Err(format!("{v:?} is longer than 63 characters"));
    }
    if v.is_empty() {
        return Ok(());
    }
    let bytes = v.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    let inner_ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) || !bytes.iter().all(|b| inner_ok(*b))
    {
        return Err(format!(
            "{v:?} is not a valid label value (alphanumerics, '-', '_', '.'; alphanumeric at both ends)"
        ));
    }
    Ok(())
}

/// Checks a label or annotation key: optional DNS-subdomain prefix and `/`, then a name
/// of at most 63 characters.
pub fn check_qualified_name(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("{k:?}: prefix {e}"))?;
    }
    if name.is_empty() {
        return Err(format!("{k:?} has an empty name part"));
    }
    check_label_value(name).map_err(|_| {
        format!(
            "{k:?} is not a valid key (name part: at most 63 alphanumerics, '-', '_', '.'; alphanumeric at both ends)"
        )
    })
}

/// Checks an RFC 1123 DNS subdomain (lowercase, at most 253 characters).
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1 to 253 characters"));
    }
    for part in s.split('.') {
        check_dns_label(part).map_err(|_| format!("{s:?} is not a valid DNS subdomain"))?;
    }
    Ok(())
}

/// Checks an RFC 1123 DNS label (container and volume names).
pub fn check_dns_label(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS label (1-63 lowercase alphanumerics or '-', alphanumeric at both ends)"
        ))
    }
}

/// Checks an environment variable name as Kubernetes accepts it.
pub fn check_env_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid env var name (letters, digits, '_', '-', '.'; not starting with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("k8s-a-eu-west-1a").is_ok());
        assert!(check_label_value("-a").is_err());
        assert!(check_label_value("a b").is_err());
        assert!(check_label_value(&"a".repeat(64)).is_err());
    }

    #[test]
    fn qualified_names() {
        assert!(check_qualified_name("kpool.io/pool").is_ok());
        assert!(check_qualified_name("app").is_ok());
        assert!(check_qualified_name("Kpool.io/pool").is_err());
        assert!(check_qualified_name("kpool.io/").is_err());
        assert!(check_qualified_name("a/b/c").is_err());
    }

    #[test]
    fn dns_labels_and_env() {
        assert!(check_dns_label("kpool-proxy").is_ok());
        assert!(check_dns_label("Kpool").is_err());
        assert!(check_env_name("KAFKA_NODE_ID").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("A B").is_err());
    }
}

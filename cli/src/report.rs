//! How kpool's binaries print an error: one line, each cause once.

/// `e` and its causes on one line, `outer: inner: root`. A cause whose text is already
/// part of the line is skipped: error types that embed their source in their own message
/// (`cannot read {path}: {source}`) would otherwise repeat it once per level.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Embeds {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("serving certificate")]
    struct Wraps(#[source] Embeds);

    #[test]
    fn each_cause_once_in_order() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Wraps(Embeds {
            path: "/x/tls.crt",
            source: io(),
        });
        assert_eq!(
            one_line(&e),
            "serving certificate: cannot read /x/tls.crt: no such file"
        );
        let e = Embeds {
            path: "/x",
            source: io(),
        };
        assert_eq!(one_line(&e), "cannot read /x: no such file");
        assert_eq!(one_line(&io()), "no such file");
    }
}

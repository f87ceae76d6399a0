//! `{placeholder}` templates, compiled once at policy load and rendered per pod.

use std::fmt::Write as _;

/// A value a template can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    Pod,
    Namespace,
    Ordinal,
    BrokerId,
    Rack,
    Zone,
    Cluster,
    Port,
    MeshAddress,
}

impl Var {
    /// Every placeholder name, for error messages.
    pub const ALL: [&'static str; 9] = [
        "pod",
        "namespace",
        "ordinal",
        "broker_id",
        "rack",
        "zone",
        "cluster",
        "port",
        "mesh_address",
    ];

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "pod" => Self::Pod,
            "namespace" => Self::Namespace,
            "ordinal" => Self::Ordinal,
            "broker_id" => Self::BrokerId,
            "rack" => Self::Rack,
            "zone" => Self::Zone,
            "cluster" => Self::Cluster,
            "port" => Self::Port,
            "mesh_address" => Self::MeshAddress,
            _ => return None,
        })
    }

    /// True when the value differs from pod to pod of one StatefulSet. `{mesh_address}`
    /// does not, but counts as per-pod: a pod template's renderer knows only namespace and
    /// cluster, so a template using it is rendered at admission with the full identity.
    pub fn per_pod(self) -> bool {
        !matches!(self, Self::Namespace | Self::Cluster)
    }
}

/// Values for rendering.
pub trait Vars {
    /// Writes the value of `var` to `out`.
    fn write_var(&self, var: Var, out: &mut String);
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Lit(String),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// Why a template does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {{{name}}} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("placeholder {{{name}}} is not allowed here (allowed: {allowed})")]
    NotAllowed { name: String, allowed: String },
}

impl Template {
    /// Compiles `src`, accepting only `allowed` placeholders.
    ///
    /// `lenient` leaves unknown `{word}` and `${word}` as literal text (for container specs,
    /// where shell syntax is common); otherwise an unknown placeholder is an error.
    pub fn compile(src: &str, allowed: &[Var], lenient: bool) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut rest = src;
        while let Some(open) = rest.find('{') {
            let (before, from_brace) = rest.split_at(open);
            lit.push_str(before);
            let after_dollar = before.ends_with('$');
            let Some(close) = from_brace.find('}') else {
                lit.push_str(from_brace);
                rest = "";
                break;
            };
            let name = &from_brace[1..close];
            let is_ident =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            match Var::parse(name) {
                Some(var) if !after_dollar => {
                    if !allowed.contains(&var) {
                        return Err(TemplateError::NotAllowed {
                            name: name.to_owned(),
                            allowed: names(allowed),
                        });
                    }
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit)));
                    }
                    segments.push(Segment::Var(var));
                }
                None if is_ident && !after_dollar && !lenient => {
                    return Err(TemplateError::Unknown {
                        name: name.to_owned(),
                        known: names(allowed),
                    });
                }
                _ => lit.push_str(&from_brace[..=close]),
            }
            rest = &from_brace[close + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            segments.push(Segment::Lit(lit));
        }
        Ok(Self { segments })
    }

    /// The empty template (renders to "").
    pub fn empty() -> Self {
        Self {
            segments: Vec::new(),
        }
    }

    /// True when the template has placeholders.
    pub fn has_vars(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Var(_)))
    }

    /// True when the rendered text differs between pods of one StatefulSet.
    pub fn is_per_pod(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Var(v) if v.per_pod()))
    }

    /// Renders with `vars`.
    pub fn render(&self, vars: &dyn Vars) -> String {
        let mut out = String::new();
        self.render_into(vars, &mut out);
        out
    }

    /// Renders with `vars`, appending to `out`.
    pub fn render_into(&self, vars: &dyn Vars, out: &mut String) {
        for seg in &self.segments {
            match seg {
                Segment::Lit(s) => out.push_str(s),
                Segment::Var(v) => vars.write_var(*v, out),
            }
        }
    }
}

fn names(vars: &[Var]) -> String {
    let mut out = String::new();
    for (i, v) in vars.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let idx = Var::ALL
            .iter()
            .position(|n| Var::parse(n) == Some(*v))
            .unwrap_or_default();
        let _ = write!(out, "{{{}}}", Var::ALL[idx]);
    }
    out
}

/// Every placeholder, for templates that may use the whole identity.
pub const ALL_VARS: &[Var] = &[
    Var::Pod,
    Var::Namespace,
    Var::Ordinal,
    Var::BrokerId,
    Var::Rack,
    Var::Zone,
    Var::Cluster,
    Var::Port,
    Var::MeshAddress,
];

#[cfg(test)]
mod tests {
    use super::*;

    struct V;
    impl Vars for V {
        fn write_var(&self, var: Var, out: &mut String) {
            out.push_str(match var {
                Var::Zone => "z1",
                Var::Cluster => "c",
                Var::Port => "9092",
                _ => "?",
            });
        }
    }

    #[test]
    fn renders_known_placeholders() {
        let t = Template::compile("{cluster}-{zone}", &[Var::Cluster, Var::Zone], false)
            .expect("compiles");
        assert_eq!(t.render(&V), "c-z1");
        assert!(t.is_per_pod());
    }

    #[test]
    fn strict_rejects_unknown_placeholder() {
        let err = Template::compile("{cluster}-{zome}", &[Var::Cluster, Var::Zone], false)
            .expect_err("unknown placeholder");
        assert_eq!(
            err.to_string(),
            "unknown placeholder {zome} (known: {cluster}, {zone})"
        );
    }

    #[test]
    fn rejects_placeholder_outside_allowed_set() {
        let err = Template::compile("{port}", &[Var::Cluster, Var::Zone], false)
            .expect_err("not allowed");
        assert!(err.to_string().contains("{port} is not allowed here"));
    }

    #[test]
    fn lenient_keeps_shell_syntax() {
        let t = Template::compile("echo ${HOME} {x} {port} {", ALL_VARS, true).expect("compiles");
        assert_eq!(t.render(&V), "echo ${HOME} {x} 9092 {");
        let t = Template::compile("${port}", ALL_VARS, false).expect("compiles");
        assert!(!t.has_vars());
    }
}

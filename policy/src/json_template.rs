//! A JSON document whose strings may hold placeholders (the sidecar container and volumes).
//! Subtrees without placeholders are kept as ready `Value`s so rendering is mostly a clone.

use serde_json::Value;

use crate::template::{ALL_VARS, Template, TemplateError, Vars};

/// A compiled JSON template. Subtrees without placeholders are kept as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// JSON text, written as is.
    Static(String),
    Str(Template),
    Array(Vec<JsonTemplate>),
    /// Keys are kept as JSON string literals.
    Object(Vec<(String, JsonTemplate)>),
}

/// A placeholder error with the JSON path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonTemplateError {
    pub path: String,
    pub error: TemplateError,
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// Appends `s` as a JSON string literal (RFC 8259 escaping).
pub fn push_json_str(out: &mut String, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // Room for every escape at once (most are two bytes), so the buffer grows once.
    let escapes = s.bytes().filter(|&b| must_escape(b)).count();
    out.reserve(s.len() + 2 + escapes * 6);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// True when `bytes` hold a character a JSON string must escape. No early exit, so the
/// loop vectorises: most strings need nothing.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |acc, &b| acc | must_escape(b))
}

/// A byte a JSON string cannot hold as is.
fn must_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl JsonTemplate {
    /// Compiles every string of `value`; `path` prefixes error paths.
    pub fn compile(value: &Value, path: &str) -> Result<Self, JsonTemplateError> {
        let node = match value {
            Value::String(s) => {
                let t =
                    Template::compile(s, ALL_VARS, true).map_err(|error| JsonTemplateError {
                        path: path.to_owned(),
                        error,
                    })?;
                if t.has_vars() {
                    Self::Str(t)
                } else {
                    Self::Static(json_text(value))
                }
            }
            Value::Array(items) => {
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile(v, &format!("{path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                if nodes.iter().all(|n| matches!(n, Self::Static(_))) {
                    Self::Static(json_text(value))
                } else {
                    Self::Array(nodes)
                }
            }
            Value::Object(map) => {
                let nodes = map
                    .iter()
                    .map(|(k, v)| {
                        let mut key = String::new();
                        push_json_str(&mut key, k);
                        Ok((key, Self::compile(v, &format!("{path}.{k}"))?))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if nodes.iter().all(|(_, n)| matches!(n, Self::Static(_))) {
                    Self::Static(json_text(value))
                } else {
                    Self::Object(nodes)
                }
            }
            other => Self::Static(json_text(other)),
        };
        Ok(node)
    }

    /// True when the rendered document differs between pods of one StatefulSet.
    pub fn is_per_pod(&self) -> bool {
        match self {
            Self::Static(_) => false,
            Self::Str(t) => t.is_per_pod(),
            Self::Array(items) => items.iter().any(Self::is_per_pod),
            Self::Object(fields) => fields.iter().any(|(_, n)| n.is_per_pod()),
        }
    }

    /// Renders with `vars` as JSON text appended to `out`.
    pub fn render_json(&self, vars: &dyn Vars, out: &mut String) {
        match self {
            Self::Static(text) => out.push_str(text),
            Self::Str(t) => {
                // Rendered in place; escaped (rarely) only if the text needs it.
                out.push('"');
                let start = out.len();
                t.render_into(vars, out);
                if needs_escape(&out.as_bytes()[start..]) {
                    let raw = out.split_off(start - 1);
                    push_json_str(out, &raw[1..]);
                } else {
                    out.push('"');
                }
            }
            Self::Array(items) => {
                out.push('[');
                for (i, n) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    n.render_json(vars, out);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (i, (k, n)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push(':');
                    n.render_json(vars, out);
                }
                out.push('}');
            }
        }
    }

    /// Renders with `vars` as a value.
    pub fn render(&self, vars: &dyn Vars) -> Value {
        let mut text = String::new();
        self.render_json(vars, &mut text);
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::template::Var;

    struct V;
    impl Vars for V {
        fn write_var(&self, var: Var, out: &mut String) {
            out.push_str(if var == Var::Pod { "kafka-2" } else { "x" });
        }
    }

    #[test]
    fn renders_nested_strings_and_keeps_static_parts() {
        let v = json!({"name": "proxy", "args": ["--id={pod}", "--n", 3], "env": [{"name": "A", "value": "${HOME}"}]});
        let t = JsonTemplate::compile(&v, "sidecar.container").expect("compiles");
        assert!(t.is_per_pod());
        let out = t.render(&V);
        assert_eq!(out["args"], json!(["--id=kafka-2", "--n", 3]));
        assert_eq!(out["env"], v["env"]);
        let mut text = String::new();
        t.render_json(&V, &mut text);
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("valid JSON"),
            out
        );
    }

    #[test]
    fn rendered_values_that_need_escaping_are_escaped() {
        struct Odd;
        impl Vars for Odd {
            fn write_var(&self, _: Var, out: &mut String) {
                out.push_str("q\"uote\\ and\nline");
            }
        }
        let v = json!({"args": ["--id={pod}", "plain {pod} text"]});
        let t = JsonTemplate::compile(&v, "c").expect("compiles");
        let mut text = String::from("prefix:");
        t.render_json(&Odd, &mut text);
        let rendered = text.strip_prefix("prefix:").expect("prefix kept");
        let back: Value = serde_json::from_str(rendered).expect("valid JSON");
        assert_eq!(
            back,
            json!({"args": ["--id=q\"uote\\ and\nline", "plain q\"uote\\ and\nline text"]})
        );
    }

    proptest::proptest! {
        #[test]
        fn any_string_escapes_like_serde_json(s in "\\PC*|[\u{0}-\u{7f}]{0,40}") {
            let mut out = String::new();
            push_json_str(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).expect("encodes"));
        }
    }

    #[test]
    fn json_strings_escape_like_serde_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "line\nbreak\ttab\r",
            "\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).expect("encodes"), "{s:?}");
        }
    }

    #[test]
    fn rendered_values_are_escaped() {
        struct Q;
        impl Vars for Q {
            fn write_var(&self, _: Var, out: &mut String) {
                out.push_str("a\"b\\c");
            }
        }
        let t = JsonTemplate::compile(&json!({"k\"ey": ["{pod}"]}), "c").expect("compiles");
        assert_eq!(t.render(&Q), json!({"k\"ey": ["a\"b\\c"]}));
    }

    #[test]
    fn static_document_is_not_per_pod() {
        let v = json!({"name": "proxy", "args": ["--ns={namespace}"]});
        let t = JsonTemplate::compile(&v, "c").expect("compiles");
        assert!(!t.is_per_pod());
    }
}

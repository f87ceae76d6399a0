//! A JSON document whose strings may hold placeholders (the sidecar container and volumes).
//! Subtrees without placeholders are kept as ready `Value`s so rendering is mostly a clone.

use serde_json::{Map, Value};

use crate::template::{ALL_VARS, Template, TemplateError, Vars};

/// A compiled JSON template.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Static(Value),
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

/// A placeholder error with the JSON path where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonTemplateError {
    pub path: String,
    pub error: TemplateError,
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
                    Self::Static(value.clone())
                }
            }
            Value::Array(items) => {
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile(v, &format!("{path}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                if nodes.iter().all(|n| matches!(n, Self::Static(_))) {
                    Self::Static(value.clone())
                } else {
                    Self::Array(nodes)
                }
            }
            Value::Object(map) => {
                let nodes = map
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Self::compile(v, &format!("{path}.{k}"))?)))
                    .collect::<Result<Vec<_>, _>>()?;
                if nodes.iter().all(|(_, n)| matches!(n, Self::Static(_))) {
                    Self::Static(value.clone())
                } else {
                    Self::Object(nodes)
                }
            }
            other => Self::Static(other.clone()),
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

    /// Renders with `vars`.
    pub fn render(&self, vars: &dyn Vars) -> Value {
        match self {
            Self::Static(v) => v.clone(),
            Self::Str(t) => Value::String(t.render(vars)),
            Self::Array(items) => Value::Array(items.iter().map(|n| n.render(vars)).collect()),
            Self::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, n) in fields {
                    map.insert(k.clone(), n.render(vars));
                }
                Value::Object(map)
            }
        }
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
    }

    #[test]
    fn static_document_is_not_per_pod() {
        let v = json!({"name": "proxy", "args": ["--ns={namespace}"]});
        let t = JsonTemplate::compile(&v, "c").expect("compiles");
        assert!(!t.is_per_pod());
    }
}

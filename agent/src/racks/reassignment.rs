//! Reading a plan: kafka-reassign-partitions JSON (version 1), the format `racks plan`
//! prints and Kafka's own tool reads, so `racks apply -f` takes either's files.
//!
//! Read strictly, like the planner's `--from` file: unknown keys are errors and every error
//! names the JSON path of the bad field, because hand-edited plans are where typos happen
//! and a typo here moves data. `log_dirs`, when present, must be `"any"` for every replica:
//! kpool moves replicas between brokers, never between a broker's log directories.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::execute::Move;
use super::json_file::{self, JsonFileError};

/// A plan file that cannot be used.
pub type PlanFileError = JsonFileError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: i64,
    partitions: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    topic: String,
    partition: i32,
    replicas: Vec<i32>,
    #[serde(default)]
    log_dirs: Option<Vec<String>>,
}

/// Reads a plan file (see [`parse`]).
pub fn read(path: &Path) -> Result<Vec<Move>, PlanFileError> {
    json_file::read(path, parse)
}

/// Parses `{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[0,3,..],
/// "log_dirs":["any",..]},..]}` into moves, in file order (`from` unknown: the executor
/// takes the replicas it first sees). Checked: version 1; topic names not empty; partitions
/// and broker ids not negative; replicas not empty and without duplicates; each partition
/// once; `log_dirs`, if given, one `"any"` per replica.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Move>, PlanFileError> {
    let invalid = |path, message| PlanFileError::invalid(origin, path, message);
    let doc: Doc = json_file::parse(text, origin)?;
    if doc.version != 1 {
        return Err(invalid(
            "version".to_owned(),
            format!(
                "expected 1 (kafka-reassign-partitions JSON), found {}",
                doc.version
            ),
        ));
    }
    let mut seen: HashMap<(&str, i32), usize> = HashMap::with_capacity(doc.partitions.len());
    for (i, p) in doc.partitions.iter().enumerate() {
        let at = |field: &str| format!("partitions[{i}]{field}");
        if p.topic.is_empty() {
            return Err(invalid(
                at(".topic"),
                "expected a topic name, found an empty string".to_owned(),
            ));
        }
        if p.partition < 0 {
            return Err(invalid(
                at(".partition"),
                format!("expected a partition of 0 or more, found {}", p.partition),
            ));
        }
        if let Some(first) = seen.insert((&p.topic, p.partition), i) {
            return Err(invalid(
                at(""),
                format!(
                    "{}-{} is listed twice (also partitions[{first}])",
                    p.topic, p.partition
                ),
            ));
        }
        if p.replicas.is_empty() {
            return Err(invalid(
                at(".replicas"),
                "expected at least one replica, found none".to_owned(),
            ));
        }
        for (j, r) in p.replicas.iter().enumerate() {
            if *r < 0 {
                return Err(invalid(
                    at(&format!(".replicas[{j}]")),
                    format!("expected a broker id of 0 or more, found {r}"),
                ));
            }
            if let Some(first) = p.replicas[..j].iter().position(|x| x == r) {
                return Err(invalid(
                    at(&format!(".replicas[{j}]")),
                    format!("broker {r} is listed twice (also replicas[{first}])"),
                ));
            }
        }
        if let Some(dirs) = &p.log_dirs {
            if dirs.len() != p.replicas.len() {
                return Err(invalid(
                    at(".log_dirs"),
                    format!(
                        "expected one entry per replica ({}), found {}",
                        p.replicas.len(),
                        dirs.len()
                    ),
                ));
            }
            if let Some((j, d)) = dirs.iter().enumerate().find(|(_, d)| *d != "any") {
                return Err(invalid(
                    at(&format!(".log_dirs[{j}]")),
                    format!(
                        "expected \"any\" (kpool moves replicas between brokers, not between \
                         log directories), found {d:?}"
                    ),
                ));
            }
        }
    }
    Ok(doc
        .partitions
        .into_iter()
        .map(|p| Move {
            topic: p.topic,
            partition: p.partition,
            from: None,
            to: p.replicas,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_racks_plan_writes() {
        let text = r#"{"version":1,"partitions":[
{"topic":"orders","partition":3,"replicas":[0,4,2],"log_dirs":["any","any","any"]},
{"topic":"orders","partition":1,"replicas":[5,2,3]}
]}"#;
        let moves = parse(text, "plan.json").expect("valid");
        assert_eq!(moves.len(), 2);
        assert_eq!(moves[0].name(), "orders-3");
        assert_eq!(moves[0].to, [0, 4, 2]);
        assert_eq!(moves[0].from, None);
        assert_eq!(moves[1].name(), "orders-1");
        let empty = parse(r#"{"version":1,"partitions":[]}"#, "p").expect("empty plan");
        assert!(empty.is_empty());
    }

    #[test]
    fn errors_name_the_json_path() {
        let cases = [
            (r#"{"version":2,"partitions":[]}"#, "p: version: expected 1"),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1],"x":1}]}"#,
                "p: partitions[0].x: unknown field",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,1]}]}"#,
                "p: partitions[0].replicas[1]: broker 1 is listed twice (also replicas[0])",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[]}]}"#,
                "p: partitions[0].replicas: expected at least one replica",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1]},{"topic":"t","partition":0,"replicas":[2]}]}"#,
                "p: partitions[1]: t-0 is listed twice (also partitions[0])",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":[1,2],"log_dirs":["any","/d"]}]}"#,
                "p: partitions[0].log_dirs[1]: expected \"any\"",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":-1,"replicas":[1]}]}"#,
                "p: partitions[0].partition: expected a partition of 0 or more, found -1",
            ),
            (
                r#"{"version":1,"partitions":[{"topic":"t","partition":0,"replicas":["a"]}]}"#,
                "p: partitions[0].replicas[0]: invalid type",
            ),
            (r#"{"version":1,"partitions":[]} x"#, "p: (end):"),
        ];
        for (text, want) in cases {
            let err = parse(text, "p").expect_err(text).to_string();
            assert!(err.starts_with(want), "{text}\n  got: {err}\n want: {want}");
        }
    }
}

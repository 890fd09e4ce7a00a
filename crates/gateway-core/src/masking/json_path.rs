//! JSON path rules (`[[masking]] json_paths`): `$.value`, `$..connectionString`,
//! `$.properties.primaryKey`, `$.keys[*].value`. A subset of JSONPath: the root `$`, child
//! `.name` or `['name']`, descendant `..name`, any child `.*` or `[*]`, array index `[n]`.
//! Names match case-insensitively (a rule must not be dodged by a key's case). What a path
//! selects is replaced whole, whatever it holds.

use serde_json::Value;

use super::MaskCounts;
use super::render::{Target, render};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Child(String),
    Descendant(String),
    AnyChild,
    Index(usize),
}

/// A parsed JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

/// Longest path text accepted.
const MAX_PATH: usize = 512;

impl JsonPath {
    /// Parse `$…`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        if text.len() > MAX_PATH {
            return Err(format!("longer than {MAX_PATH} characters"));
        }
        let Some(mut rest) = text.strip_prefix('$') else {
            return Err(format!("`{text}` does not start with `$`"));
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("..") {
                let (name, r) = name(r);
                if name.is_empty() {
                    return Err(format!("`{text}`: `..` needs a name after it"));
                }
                steps.push(Step::Descendant(name.to_string()));
                rest = r;
            } else if let Some(r) = rest.strip_prefix('.') {
                if let Some(r) = r.strip_prefix('*') {
                    steps.push(Step::AnyChild);
                    rest = r;
                    continue;
                }
                let (name, r) = name(r);
                if name.is_empty() {
                    return Err(format!("`{text}`: `.` needs a name after it"));
                }
                steps.push(Step::Child(name.to_string()));
                rest = r;
            } else if let Some(r) = rest.strip_prefix('[') {
                let Some(end) = r.find(']') else {
                    return Err(format!("`{text}`: `[` is not closed"));
                };
                let inner = r[..end].trim();
                let step = if inner == "*" {
                    Step::AnyChild
                } else if let Some(n) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    Step::Child(n.to_string())
                } else if let Ok(i) = inner.parse::<usize>() {
                    Step::Index(i)
                } else {
                    return Err(format!(
                        "`{text}`: `[{inner}]` is not `*`, an index or a quoted name"
                    ));
                };
                steps.push(step);
                rest = &r[end + 1..];
            } else {
                return Err(format!("`{text}`: unexpected `{rest}`"));
            }
        }
        if steps.is_empty() {
            return Err(format!(
                "`{text}` selects the whole document; use a column rule or detectors"
            ));
        }
        Ok(JsonPath { steps })
    }

    /// Call `f` on every value the path selects in `doc` (each once).
    pub fn apply(&self, doc: &mut Value, f: &mut dyn FnMut(&mut Value)) {
        walk(&self.steps, doc, f);
    }
}

impl super::SessionMasks {
    /// Whether JSON path rules apply (the document must then be parsed to be masked).
    pub fn has_json_paths(&self) -> bool {
        !self.json_paths.is_empty()
    }

    /// Replace every value a JSON path rule selects in `doc` with its masked rendering (a
    /// string), counting each under its rule.
    pub fn mask_json_paths(&self, doc: &mut Value, counts: &mut MaskCounts) {
        let mut out = Vec::new();
        for (i, (path, _, strategy)) in self.json_paths.iter().enumerate() {
            path.apply(doc, &mut |v| {
                let raw = match &mut *v {
                    serde_json::Value::String(s) => std::mem::take(s).into_bytes(),
                    other => other.to_string().into_bytes(),
                };
                out.clear();
                render(
                    Target::Column,
                    *strategy,
                    &raw,
                    &self.keyed,
                    false,
                    &mut out,
                );
                *v = serde_json::Value::String(String::from_utf8_lossy(&out).into_owned());
                counts.add_column(self.first_path_rule + i);
                counts.add_value();
            });
        }
    }
}

/// A name up to the next `.` or `[`.
fn name(s: &str) -> (&str, &str) {
    let end = s.find(['.', '[']).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn walk(steps: &[Step], v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    let Some((step, rest)) = steps.split_first() else {
        f(v);
        return;
    };
    match step {
        Step::Child(n) => {
            if let Value::Object(m) = v {
                for (k, child) in m.iter_mut() {
                    if k.eq_ignore_ascii_case(n) {
                        walk(rest, child, f);
                    }
                }
            }
        }
        Step::AnyChild => match v {
            Value::Object(m) => m.values_mut().for_each(|c| walk(rest, c, f)),
            Value::Array(a) => a.iter_mut().for_each(|c| walk(rest, c, f)),
            _ => {}
        },
        Step::Index(i) => {
            if let Some(c) = v.as_array_mut().and_then(|a| a.get_mut(*i)) {
                walk(rest, c, f);
            }
        }
        Step::Descendant(n) => descend(n, rest, v, f),
    }
}

/// `..n`: every member named `n` at any depth; a selected value is not searched further (it
/// is replaced whole).
fn descend(n: &str, rest: &[Step], v: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k.eq_ignore_ascii_case(n) {
                    walk(rest, child, f);
                } else {
                    descend(n, rest, child, f);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| descend(n, rest, c, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(path: &str, doc: &str) -> String {
        let p = JsonPath::parse(path).unwrap_or_else(|e| panic!("{e}"));
        let mut v: Value = serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}"));
        p.apply(&mut v, &mut |x| *x = Value::String("X".into()));
        v.to_string()
    }

    #[test]
    fn paths_select_what_they_name() {
        let doc = r#"{"value":"s3cr3t","id":"a","properties":{"primaryKey":"k","PrimaryKey2":"j","db":{"connectionString":"c"}},"keys":[{"value":"1"},{"value":"2"}]}"#;
        assert_eq!(
            masked("$.value", doc),
            r#"{"value":"X","id":"a","properties":{"primaryKey":"k","PrimaryKey2":"j","db":{"connectionString":"c"}},"keys":[{"value":"1"},{"value":"2"}]}"#
        );
        assert!(masked("$..connectionString", doc).contains(r#""connectionString":"X""#));
        assert!(masked("$.properties.PRIMARYKEY", doc).contains(r#""primaryKey":"X""#));
        assert!(masked("$.keys[*].value", doc).contains(r#"[{"value":"X"},{"value":"X"}]"#));
        assert!(masked("$.keys[1].value", doc).contains(r#"[{"value":"1"},{"value":"X"}]"#));
        assert!(
            masked("$['properties'].*", doc)
                .contains(r#""properties":{"primaryKey":"X","PrimaryKey2":"X","db":"X"}"#)
        );
        assert!(masked("$..value", doc).matches("\"X\"").count() == 3);
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["value", "$", "$.", "$..", "$[x]", "$[1", "$.a b[", "$value"] {
            assert!(JsonPath::parse(p).is_err(), "{p}");
        }
    }
}

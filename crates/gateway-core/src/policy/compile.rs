//! From policy text to a validated policy set: parse, name every policy by its `@id`, check
//! the gateway's annotations, validate in strict mode against the shipped schema. Every
//! problem is reported with its line, not just the first one.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet, ValidationMode};
use miette::Diagnostic;

use super::schema::shipped;

/// What the engine needs to know about one policy besides its Cedar text.
#[derive(Debug, Clone)]
pub(crate) struct PolicyMeta {
    /// Position in the file, so messages and reasons come out in the order written.
    pub index: usize,
    /// Line the policy starts on (1-based).
    pub line: usize,
    pub forbid: bool,
    /// `@approval("N")`: the permit holds only once N people approve.
    pub approval: Option<u32>,
    /// `@approvers("g1, g2")`: groups whose members may approve.
    pub approvers: Vec<String>,
    /// `@reason("...")`: what a denied client reads.
    pub reason: Option<String>,
}

/// A policy file that passed every check.
pub(crate) struct Compiled {
    pub set: PolicySet,
    pub meta: HashMap<String, PolicyMeta>,
    /// Validator warnings (e.g. a policy that can never apply); not fatal.
    pub warnings: Vec<String>,
}

/// Annotations the gateway understands. Others are allowed and ignored.
const ANN_ID: &str = "id";
const ANN_APPROVAL: &str = "approval";
const ANN_APPROVERS: &str = "approvers";
const ANN_REASON: &str = "reason";

/// Parse and check `text`. On failure, every problem found, each with a line.
pub(crate) fn compile(text: &str) -> Result<Compiled, Vec<String>> {
    let shipped = shipped().map_err(|e| vec![e])?;
    let parsed = PolicySet::from_str(text).map_err(|errs| {
        errs.iter()
            .map(|e| with_location(text, e, e.to_string()))
            .collect::<Vec<_>>()
    })?;

    let mut problems = Vec::new();
    for template in parsed.templates() {
        let line = find_line(text, &template.to_string(), 0).map_or(0, |(l, _)| l);
        problems.push(format!(
            "line {line}: templates (policies with ?principal or ?resource) are not supported"
        ));
    }

    // The parser names policies `policy0`, `policy1`... in the order written.
    let mut originals: Vec<(usize, &Policy)> = parsed
        .policies()
        .map(|p| (source_index(p.id()), p))
        .collect();
    originals.sort_by_key(|(i, _)| *i);

    let mut set = PolicySet::new();
    let mut meta: HashMap<String, PolicyMeta> = HashMap::new();
    let mut cursor = 0;
    for (index, policy) in originals {
        let (line, end) = find_line(text, &policy.to_string(), cursor).unwrap_or((0, cursor));
        cursor = end;
        let at = format!("line {line}");
        let id = match policy.annotation(ANN_ID).map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            Some(_) => {
                problems.push(format!("{at}: @id is empty; give the policy a name"));
                format!("<policy at line {line}>")
            }
            None => {
                problems.push(format!(
                    "{at}: policy has no @id(\"...\"); every policy needs one so audit can name it"
                ));
                format!("<policy at line {line}>")
            }
        };
        if let Some(first) = meta.get(&id) {
            problems.push(format!(
                "{at}: @id(\"{id}\") is already used by the policy at line {}",
                first.line
            ));
            continue;
        }
        let m = annotations(policy, index, line, &id, &mut problems);
        if let Err(e) = set.add(policy.new_id(PolicyId::new(&id))) {
            problems.push(format!("{at}: policy `{id}`: {e}"));
        }
        meta.insert(id, m);
    }

    let result = shipped.validator.validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        problems.push(with_location(text, e, e.to_string()));
    }
    let warnings = result
        .validation_warnings()
        .map(|w| with_location(text, w, w.to_string()))
        .collect();

    if problems.is_empty() {
        Ok(Compiled {
            set,
            meta,
            warnings,
        })
    } else {
        // Report in file order; the sort is stable, so one line's problems keep theirs.
        problems.sort_by_key(|p| line_of(p));
        Err(problems)
    }
}

/// The line a problem message starts with (`line 12...`), or 0 when it has none.
fn line_of(problem: &str) -> usize {
    problem
        .strip_prefix("line ")
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Read and check the gateway's annotations on one policy.
fn annotations(
    policy: &Policy,
    index: usize,
    line: usize,
    id: &str,
    problems: &mut Vec<String>,
) -> PolicyMeta {
    let forbid = policy.effect() == Effect::Forbid;
    let at = format!("line {line}: policy `{id}`");
    let approval = policy.annotation(ANN_APPROVAL).and_then(|v| {
        if forbid {
            problems.push(format!(
                "{at}: @approval applies only to permit policies (a forbid cannot be approved)"
            ));
            return None;
        }
        match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                problems.push(format!(
                    "{at}: @approval(\"{v}\") must be a positive whole number of approvers"
                ));
                None
            }
        }
    });
    let approvers: Vec<String> = policy
        .annotation(ANN_APPROVERS)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if let Some(v) = policy.annotation(ANN_APPROVERS) {
        if policy.annotation(ANN_APPROVAL).is_none() {
            problems.push(format!(
                "{at}: @approvers needs @approval(\"N\") on the same policy"
            ));
        } else if approvers.is_empty() {
            problems.push(format!(
                "{at}: @approvers(\"{v}\") names no group; use a comma-separated list"
            ));
        }
    }
    let reason = policy.annotation(ANN_REASON).map(|r| r.trim().to_string());
    if reason.as_deref() == Some("") {
        problems.push(format!("{at}: @reason is empty"));
    }
    PolicyMeta {
        index,
        line,
        forbid,
        approval,
        approvers,
        reason,
    }
}

/// `policy7` → 7. Parser-assigned ids always have this form.
fn source_index(id: &PolicyId) -> usize {
    AsRef::<str>::as_ref(id)
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Where `snippet` (a policy's exact source text) starts at or after `from`: its 1-based
/// line and the byte offset just past it.
fn find_line(text: &str, snippet: &str, from: usize) -> Option<(usize, usize)> {
    let start = from + text.get(from..)?.find(snippet)?;
    Some((line_col(text, start).0, start + snippet.len()))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// `line L:C: message (help)` using the diagnostic's first label.
fn with_location(text: &str, diag: &dyn Diagnostic, message: String) -> String {
    let offset = diag.labels().and_then(|mut l| l.next()).map(|l| l.offset());
    let help = diag
        .help()
        .map(|h| format!(" (help: {h})"))
        .unwrap_or_default();
    match offset {
        Some(o) => {
            let (line, col) = line_col(text, o);
            format!("line {line}:{col}: {message}{help}")
        }
        None => format!("{message}{help}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncd\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (2, 2));
    }
}

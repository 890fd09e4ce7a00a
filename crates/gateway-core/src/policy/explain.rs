//! `portcullis policy test`: one decision, explained — the verdict, the policies that
//! decided it with their annotations, and any evaluation error.

use std::fmt;

use cedar_policy::{Context, Request};

use super::decision::{Decision, Verdict};
use super::engine::{PolicyEngine, context_for};
use super::request::{ConnectionRef, PrincipalRef};
use super::schema::{Shipped, shipped};
use crate::action::Action;
use crate::identity::Identity;

/// A decision and why it came out that way.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub decision: Decision,
    /// `issuer/subject`.
    pub principal: String,
    pub connection: String,
    /// Cedar action id.
    pub action: String,
    /// Every policy Cedar found satisfied (permits on Allow/Review, forbids on Deny).
    pub policies: Vec<PolicyNote>,
    /// Evaluation errors, each naming its policy; any of them denies the command.
    pub errors: Vec<String>,
}

/// One satisfied policy and its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNote {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// Line the policy starts on.
    pub line: usize,
    pub reason: Option<String>,
    pub approval: Option<u32>,
    pub approvers: Vec<String>,
}

impl PolicyEngine {
    /// Explain the decision for a command, as [`PolicyEngine::decide`] makes it (but never
    /// from the cache).
    pub fn explain_action(
        &self,
        who: &Identity,
        conn: &ConnectionRef<'_>,
        action: &Action,
    ) -> Explanation {
        let who = PrincipalRef::from(who);
        match context_for(action) {
            Ok(context) => self.explain_with(&who, conn, action.cedar_id(), context),
            Err(e) => self.refused(&who, conn, action.cedar_id(), e),
        }
    }

    /// Explain the decision for a caller described by name (no token), an action id such
    /// as `sql.write`, and an optional JSON context object. Context fields that are left
    /// out take neutral defaults (no tables, bounded, empty strings). Errors name an
    /// unknown action or a context that does not match the schema.
    pub fn explain(
        &self,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action: &str,
        context: Option<&serde_json::Value>,
    ) -> Result<Explanation, String> {
        let s = shipped()?;
        let Some((uid, _)) = s.action(action).filter(|_| is_requestable(action)) else {
            let mut known: Vec<&str> = s
                .actions
                .keys()
                .map(String::as_str)
                .filter(|a| is_requestable(a))
                .collect();
            known.sort_unstable();
            return Err(format!(
                "unknown action `{action}`; one of: {}",
                known.join(", ")
            ));
        };
        let mut json = default_context(action);
        match context {
            None => {}
            Some(serde_json::Value::Object(given)) => {
                for (k, v) in given {
                    json.insert(k.clone(), v.clone());
                }
            }
            Some(_) => return Err("the context must be a JSON object".into()),
        }
        let context =
            Context::from_json_value(serde_json::Value::Object(json), Some((&s.schema, uid)))
                .map_err(|e| format!("context for `{action}`: {e}"))?;
        // Parsing with the schema does not check every type; a schema-checked request does.
        Request::new(
            Shipped::uid(&s.identity_type, "check"),
            uid.clone(),
            Shipped::uid(&s.connection_type, conn.name),
            context.clone(),
            Some(&s.schema),
        )
        .map_err(|e| format!("context for `{action}`: {e}"))?;
        Ok(self.explain_with(who, conn, action, context))
    }

    fn explain_with(
        &self,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action: &str,
        context: Context,
    ) -> Explanation {
        let evaluated = self.evaluate(who, conn, action, context);
        let policies = evaluated
            .satisfied
            .iter()
            .filter_map(|id| {
                self.meta(id).map(|m| PolicyNote {
                    id: id.clone(),
                    effect: if m.forbid { "forbid" } else { "permit" },
                    line: m.line,
                    reason: m.reason.clone(),
                    approval: m.approval,
                    approvers: m.approvers.clone(),
                })
            })
            .collect();
        Explanation {
            decision: evaluated.decision,
            principal: format!("{}/{}", who.issuer, who.subject),
            connection: conn.name.to_string(),
            action: action.to_string(),
            policies,
            errors: evaluated.errors,
        }
    }

    fn refused(
        &self,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action: &str,
        error: String,
    ) -> Explanation {
        Explanation {
            decision: Decision::deny(Vec::new(), error.clone(), self.version()),
            principal: format!("{}/{}", who.issuer, who.subject),
            connection: conn.name.to_string(),
            action: action.to_string(),
            policies: Vec::new(),
            errors: vec![error],
        }
    }
}

/// Action groups (`sql`, `ssh`...) are for policies to match on, never requested.
fn is_requestable(action: &str) -> bool {
    action == "connect" || action.contains('.')
}

/// Neutral values for the context fields the schema requires.
fn default_context(action: &str) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Value, json};
    let v = if action.starts_with("sql.") {
        json!({ "tables": [], "unbounded": false, "statement": "", "functions": [] })
    } else if action == "ssh.exec" {
        json!({ "command": "", "program": "", "args": "", "argv": [], "programs": [], "opaque": false })
    } else if action.starts_with("http.") {
        json!({ "method": "", "path": "", "host": "" })
    } else {
        json!({})
    };
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.decision;
        let verdict = match &d.verdict {
            Verdict::Allow(_) => "ALLOW",
            Verdict::Deny => "DENY",
            Verdict::Review { .. } => "REVIEW",
        };
        write!(
            f,
            "{verdict} {} on {} for {} (policy version {})",
            self.action, self.connection, self.principal, d.policy_version
        )?;
        if let Some(reason) = &d.reason {
            write!(f, ": {reason}")?;
        }
        writeln!(f)?;
        for p in &self.policies {
            write!(f, "  {} `{}` (line {})", p.effect, p.id, p.line)?;
            if let Some(n) = p.approval {
                write!(f, " @approval(\"{n}\")")?;
            }
            if !p.approvers.is_empty() {
                write!(f, " @approvers(\"{}\")", p.approvers.join(", "))?;
            }
            if let Some(r) = &p.reason {
                write!(f, " @reason(\"{r}\")")?;
            }
            writeln!(f)?;
        }
        if self.policies.is_empty() && self.errors.is_empty() {
            writeln!(f, "  no policy applies: denied by default")?;
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

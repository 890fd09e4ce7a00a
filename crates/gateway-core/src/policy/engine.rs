//! One version of the policy, and how it decides a command.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Entities, Entity,
    PolicySet, Request, RestrictedExpression,
};

use super::cache::{CAPACITY, DecisionCache};
use super::compile::{PolicyMeta, compile};
use super::decision::{Decision, Permit, Verdict, combine};
use super::request::{ConnectionRef, PrincipalRef};
use super::schema::{Shipped, shipped};
use crate::action::Action;
use crate::identity::Identity;

/// One evaluation, with what `explain` shows beyond the decision.
pub(super) struct Evaluated {
    pub decision: Decision,
    /// Every policy Cedar found satisfied, in the order written.
    pub satisfied: Vec<String>,
    /// Evaluation errors, each naming its policy.
    pub errors: Vec<String>,
}

/// An immutable, validated policy at one version, with its decision cache.
pub struct PolicyEngine {
    set: PolicySet,
    meta: HashMap<String, PolicyMeta>,
    warnings: Vec<String>,
    version: u64,
    authorizer: Authorizer,
    cache: DecisionCache,
    evaluations: AtomicU64,
}

impl fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("version", &self.version)
            .field("policies", &self.meta.len())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Parse and validate `text` (Cedar policies) as policy version `version`. On failure,
    /// every problem found, each with its line and policy id.
    pub fn from_text(text: &str, version: u64) -> Result<PolicyEngine, Vec<String>> {
        let compiled = compile(text)?;
        Ok(PolicyEngine {
            set: compiled.set,
            meta: compiled.meta,
            warnings: compiled.warnings,
            version,
            authorizer: Authorizer::new(),
            cache: DecisionCache::new(CAPACITY),
            evaluations: AtomicU64::new(0),
        })
    }

    /// Problems with approvals given `default_approvers` (`[approvals] approvers`): every
    /// `@approval` rule must say who approves, itself or through the default; otherwise any
    /// holder of a token could approve.
    pub fn approver_problems(&self, default_approvers: &[String]) -> Vec<String> {
        if !default_approvers.is_empty() {
            return Vec::new();
        }
        let mut rules: Vec<(&String, &PolicyMeta)> = self
            .meta
            .iter()
            .filter(|(_, m)| m.approval.is_some() && m.approvers.is_empty())
            .collect();
        rules.sort_by_key(|(_, m)| m.line);
        rules
            .into_iter()
            .map(|(id, m)| {
                format!(
                    "line {}: policy `{id}`: @approval without @approvers, and [approvals] \
                     approvers is empty: name who may approve",
                    m.line
                )
            })
            .collect()
    }

    /// The policy version; a reload gives a higher one.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Ids of the policies in force, in the order written.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<_> = self.meta.iter().collect();
        ids.sort_by_key(|(_, m)| m.index);
        ids.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// Validator warnings (e.g. a policy that can never apply). Not fatal.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How many times Cedar was evaluated (cache misses), for metrics and tests.
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(Ordering::Relaxed)
    }

    /// How many decisions are cached now (bounded), for metrics.
    pub fn cached_decisions(&self) -> usize {
        self.cache.len()
    }

    /// Decide one command. Answered from the cache when this exact request (identity,
    /// connection, action and context) was decided before under this version.
    pub fn decide(&self, who: &Identity, conn: &ConnectionRef<'_>, action: &Action) -> Decision {
        // A statement the classifier could not analyse within its bounds is refused whatever
        // the policy says: nothing is known about what it would do.
        if let Action::Sql(s) = action
            && let Some(reason) = s.refusal
        {
            return Decision::deny(Vec::new(), reason.to_owned(), self.version);
        }
        let who = PrincipalRef::from(who);
        let hash = self.cache.hash(&who, conn, action);
        if let Some(hit) = self.cache.get(hash, &who, conn, action) {
            return hit;
        }
        let mut decision = match context_for(action) {
            Ok(context) => {
                self.evaluate(&who, conn, action.cedar_id(), context)
                    .decision
            }
            Err(e) => Decision::deny(Vec::new(), e, self.version),
        };
        // "No policy permits sql.call" alone does not say which call.
        if let Action::Sql(s) = action
            && !s.functions.is_empty()
            && matches!(decision.verdict, Verdict::Deny)
            && decision.policies.is_empty()
            && let Some(reason) = &mut decision.reason
        {
            reason.push_str(&format!(" (it calls {})", s.functions.join(", ")));
        }
        // Nor "no policy permits ssh.exec" which program, or that the line hides some.
        if let Action::Ssh(r) = action
            && let Some(exec) = &r.exec
            && matches!(decision.verdict, Verdict::Deny)
            && decision.policies.is_empty()
            && let Some(reason) = &mut decision.reason
        {
            if let Some(program) = &exec.program {
                reason.push_str(&format!(" (it runs {program})"));
            }
            if !exec.line.opaque.is_empty() {
                reason.push_str(&format!(
                    "; the command line cannot be checked before it runs: {}",
                    exec.line.opaque.join(", ")
                ));
            }
        }
        self.cache
            .insert(hash, &who, conn, action, decision.clone());
        decision
    }

    /// Decide a multi-statement command: it passes only if every statement passes. The
    /// first Deny wins with its reason, else any Review, else Allow with every policy that
    /// allowed a statement. An empty list is denied.
    pub fn decide_all(
        &self,
        who: &Identity,
        conn: &ConnectionRef<'_>,
        actions: &[Action],
    ) -> Decision {
        let mut decisions = Vec::with_capacity(actions.len());
        for action in actions {
            let d = self.decide(who, conn, action);
            let denied = matches!(d.verdict, Verdict::Deny);
            decisions.push(d);
            if denied {
                break;
            }
        }
        combine(decisions, self.version)
    }

    /// Evaluate one request with Cedar and turn Cedar's answer into the gateway's.
    pub(super) fn evaluate(
        &self,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action_id: &str,
        context: Context,
    ) -> Evaluated {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let response = match self.request(who, conn, action_id, context) {
            Ok((request, entities)) => self
                .authorizer
                .is_authorized(&request, &self.set, &entities),
            Err(e) => {
                return Evaluated {
                    decision: Decision::deny(
                        Vec::new(),
                        format!("policy request could not be built: {e}"),
                        self.version,
                    ),
                    satisfied: Vec::new(),
                    errors: vec![e],
                };
            }
        };
        let satisfied = self.in_order(response.diagnostics().reason().map(|id| id.as_ref()));
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        for e in response.diagnostics().errors() {
            let AuthorizationError::PolicyEvaluationError(pe) = e;
            failed.push(pe.policy_id().to_string());
            errors.push(e.to_string());
        }
        let decision = if errors.is_empty() {
            self.interpret(response.decision(), &satisfied, action_id, conn.name)
        } else {
            // Cedar skips a policy that fails to evaluate, which would let a broken forbid
            // allow a command. Fail closed instead.
            Decision::deny(
                self.in_order(failed.iter().map(String::as_str)),
                format!(
                    "denied because of a policy evaluation error: {}",
                    errors.join("; ")
                ),
                self.version,
            )
        };
        Evaluated {
            decision,
            satisfied,
            errors,
        }
    }

    /// Cedar's Allow means "some permit holds"; the gateway also needs to know whether
    /// only `@approval` permits hold (Review) and why a Deny happened.
    fn interpret(
        &self,
        cedar: CedarDecision,
        satisfied: &[String],
        action_id: &str,
        connection: &str,
    ) -> Decision {
        let meta = |id: &String| self.meta.get(id);
        match cedar {
            CedarDecision::Allow => {
                let plain: Vec<String> = satisfied
                    .iter()
                    .filter(|id| meta(id).is_some_and(|m| m.approval.is_none()))
                    .cloned()
                    .collect();
                if !plain.is_empty() {
                    return Decision {
                        verdict: Verdict::Allow(Permit::new(self.version)),
                        policies: plain,
                        reason: None,
                        policy_version: self.version,
                    };
                }
                let mut approvals = 0;
                let mut approvers: Vec<String> = Vec::new();
                for m in satisfied.iter().filter_map(meta) {
                    approvals = approvals.max(m.approval.unwrap_or(0));
                    for g in &m.approvers {
                        if !approvers.contains(g) {
                            approvers.push(g.clone());
                        }
                    }
                }
                // Defensive: Cedar allowed, so some permit holds; every such permit has an
                // approval count by the filter above, so this is at least 1.
                let approvals = approvals.max(1);
                let reason = format!(
                    "approval required by policy {}: {approvals} approval{}{}",
                    quoted(satisfied),
                    if approvals == 1 { "" } else { "s" },
                    if approvers.is_empty() {
                        String::new()
                    } else {
                        format!(" from {}", approvers.join(", "))
                    }
                );
                Decision {
                    verdict: Verdict::Review {
                        approvals,
                        approvers,
                    },
                    policies: satisfied.to_vec(),
                    reason: Some(reason),
                    policy_version: self.version,
                }
            }
            CedarDecision::Deny if satisfied.is_empty() => Decision::deny(
                Vec::new(),
                format!("no policy permits {action_id} on {connection}"),
                self.version,
            ),
            CedarDecision::Deny => {
                let reason = satisfied
                    .iter()
                    .find_map(|id| meta(id).and_then(|m| m.reason.clone()))
                    .unwrap_or_else(|| format!("denied by policy {}", quoted(&satisfied[..1])));
                Decision::deny(satisfied.to_vec(), reason, self.version)
            }
        }
    }

    /// Policy ids sorted in the order they are written in the file.
    fn in_order<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut v: Vec<(usize, String)> = ids
            .map(|id| {
                let index = self.meta.get(id).map_or(usize::MAX, |m| m.index);
                (index, id.to_string())
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// What a policy says about itself, for `explain`.
    pub(super) fn meta(&self, id: &str) -> Option<&PolicyMeta> {
        self.meta.get(id)
    }

    /// The Cedar request and its entities: the principal (with groups as parents and
    /// claims as tags), its groups, the connection, and the action with its groups.
    fn request(
        &self,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action_id: &str,
        context: Context,
    ) -> Result<(Request, Entities), String> {
        let s = shipped()?;
        let (action_uid, action_entities) = s
            .action(action_id)
            .ok_or_else(|| format!("unknown action `{action_id}`"))?;
        let principal_uid =
            Shipped::uid(&s.identity_type, &format!("{}/{}", who.issuer, who.subject));
        let resource_uid = Shipped::uid(&s.connection_type, conn.name);
        // Duplicate entities are an error in Cedar, and a token may repeat a group.
        let groups: BTreeSet<&str> = who.groups.iter().map(String::as_str).collect();
        let group_uids: Vec<_> = groups
            .iter()
            .map(|g| Shipped::uid(&s.group_type, g))
            .collect();

        let principal = Entity::new_with_tags(
            principal_uid.clone(),
            [
                (
                    "issuer".to_string(),
                    RestrictedExpression::new_string(who.issuer.to_string()),
                ),
                (
                    "subject".to_string(),
                    RestrictedExpression::new_string(who.subject.to_string()),
                ),
            ],
            group_uids.iter().cloned(),
            who.claims
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .map_err(|e| e.to_string())?;
        let resource = Entity::new_with_tags(
            resource_uid.clone(),
            [(
                "protocol".to_string(),
                RestrictedExpression::new_string(conn.protocol.as_str().to_string()),
            )],
            [],
            [],
        )
        .map_err(|e| e.to_string())?;

        let entities = Entities::from_entities(
            group_uids
                .into_iter()
                .map(|g| Entity::new_no_attrs(g, Default::default()))
                .chain([principal, resource])
                .chain(action_entities.iter().cloned()),
            None,
        )
        .map_err(|e| e.to_string())?;
        let request = Request::new(
            principal_uid,
            action_uid.clone(),
            resource_uid,
            context,
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
}

/// The Cedar context for one action, built directly (no JSON) because this runs on every
/// cache miss.
pub(super) fn context_for(action: &Action) -> Result<Context, String> {
    match action {
        Action::Connect => Ok(Context::empty()),
        Action::Ssh(req) => {
            let mut pairs = Vec::new();
            if let Some(cmd) = &req.command {
                pairs.push((
                    "command".to_string(),
                    RestrictedExpression::new_string(cmd.to_string()),
                ));
            }
            if let Some(exec) = &req.exec {
                let strings = |v: &[String]| {
                    RestrictedExpression::new_set(
                        v.iter()
                            .map(|p| RestrictedExpression::new_string(p.clone())),
                    )
                };
                pairs.push(("programs".to_string(), strings(&exec.line.programs)));
                pairs.push((
                    "opaque".to_string(),
                    RestrictedExpression::new_bool(!exec.line.opaque.is_empty()),
                ));
                pairs.push((
                    "program".to_string(),
                    RestrictedExpression::new_string(exec.program.clone().unwrap_or_default()),
                ));
                pairs.push((
                    "args".to_string(),
                    RestrictedExpression::new_string(exec.args.join(" ")),
                ));
                pairs.push(("argv".to_string(), strings(&exec.args)));
            }
            Context::from_pairs(pairs)
                .map_err(|e| format!("policy context could not be built: {e}"))
        }
        Action::Kube(r) => {
            let fields = r.fields();
            Context::from_pairs(fields.into_iter().filter_map(|(k, v)| {
                v.as_ref()
                    .map(|v| (k.to_string(), RestrictedExpression::new_string(v.clone())))
            }))
            .map_err(|e| format!("policy context could not be built: {e}"))
        }
        Action::Http(r) => Context::from_pairs([
            (
                "method".to_string(),
                RestrictedExpression::new_string(r.method.to_ascii_uppercase()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(r.path.clone()),
            ),
            (
                "host".to_string(),
                RestrictedExpression::new_string(r.host.to_ascii_lowercase()),
            ),
            (
                "query".to_string(),
                RestrictedExpression::new_string(r.query.clone()),
            ),
        ])
        .map_err(|e| format!("policy context could not be built: {e}")),
        Action::Sql(stmt) => Context::from_pairs([
            (
                "tables".to_string(),
                RestrictedExpression::new_set(
                    stmt.tables
                        .iter()
                        .map(|t| RestrictedExpression::new_string(t.to_lowercase())),
                ),
            ),
            (
                "unbounded".to_string(),
                RestrictedExpression::new_bool(stmt.unbounded),
            ),
            (
                "statement".to_string(),
                RestrictedExpression::new_string(stmt.shape.clone()),
            ),
            (
                "functions".to_string(),
                RestrictedExpression::new_set(
                    stmt.functions
                        .iter()
                        .map(|f| RestrictedExpression::new_string(f.clone())),
                ),
            ),
        ])
        .map_err(|e| format!("policy context could not be built: {e}")),
    }
}

/// `` `a`, `b` `` for messages.
fn quoted(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("`{id}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

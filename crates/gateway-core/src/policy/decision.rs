//! What policy says about one command, and the proof a forwarder needs to act on an Allow.

use crate::audit::event;

/// Proof that policy allowed a command. Only the policy module constructs it, so a
/// forwarder that takes a `Permit` cannot be called without asking policy first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    policy_version: u64,
    _private: (),
}

impl Permit {
    pub(super) fn new(policy_version: u64) -> Permit {
        Permit {
            policy_version,
            _private: (),
        }
    }

    /// Version of the policy that granted this permit.
    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A permit without `@approval` holds and no forbid does.
    Allow(Permit),
    /// A forbid holds, no permit holds, or evaluation failed.
    Deny,
    /// Only `@approval` permits hold: allowed once `approvals` people approve.
    Review {
        /// How many approvals are needed (the largest any satisfied permit asks for).
        approvals: u32,
        /// Groups whose members may approve (from `@approvers`); empty means anyone
        /// other than the requester.
        approvers: Vec<String>,
    },
}

/// A decision with what audit needs to explain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// Ids of the policies that decided, in the order they are written.
    pub policies: Vec<String>,
    /// Deny: the deciding forbid's `@reason`, or a default text. Review: what approval is
    /// required and by which rule. Allow: none.
    pub reason: Option<String>,
    /// Version of the policy that decided.
    pub policy_version: u64,
}

impl Decision {
    /// A denial with `reason`, decided by `policies`.
    pub(super) fn deny(policies: Vec<String>, reason: String, policy_version: u64) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            policies,
            reason: Some(reason),
            policy_version,
        }
    }

    /// Whether the command may go ahead now.
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allow(_))
    }

    /// The proof to hand to the forwarder, when allowed.
    pub fn permit(&self) -> Option<&Permit> {
        match &self.verdict {
            Verdict::Allow(p) => Some(p),
            Verdict::Deny | Verdict::Review { .. } => None,
        }
    }

    /// The verdict as recorded in audit.
    pub fn audit_verdict(&self) -> event::Verdict {
        match self.verdict {
            Verdict::Allow(_) => event::Verdict::Allow,
            Verdict::Deny => event::Verdict::Deny,
            Verdict::Review { .. } => event::Verdict::Review,
        }
    }
}

/// Combine per-statement decisions: the query passes only if every statement passes.
/// The first Deny wins with its reason; otherwise any Review holds the whole query (the
/// largest approval count, every approver group); otherwise Allow.
pub(super) fn combine(decisions: Vec<Decision>, policy_version: u64) -> Decision {
    if decisions.is_empty() {
        // Fail closed: a caller that found no statement should not get a permit by accident.
        return Decision::deny(Vec::new(), "no statement to decide".into(), policy_version);
    }
    let mut policies: Vec<String> = Vec::new();
    let mut review: Option<(u32, Vec<String>, Option<String>)> = None;
    let mut permit = None;
    for d in decisions {
        match d.verdict {
            Verdict::Deny => return d,
            Verdict::Review {
                approvals,
                approvers,
            } => {
                let (n, groups, _) = review.get_or_insert_with(|| (0, Vec::new(), d.reason));
                *n = (*n).max(approvals);
                for g in approvers {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
            Verdict::Allow(p) => permit = Some(p),
        }
        for id in d.policies {
            if !policies.contains(&id) {
                policies.push(id);
            }
        }
    }
    match (review, permit) {
        (Some((approvals, approvers, reason)), _) => Decision {
            verdict: Verdict::Review {
                approvals,
                approvers,
            },
            policies,
            reason,
            policy_version,
        },
        (None, Some(p)) => Decision {
            verdict: Verdict::Allow(p),
            policies,
            reason: None,
            policy_version,
        },
        // Unreachable: a non-empty list with no Deny and no Review has an Allow.
        (None, None) => Decision::deny(policies, "no statement to decide".into(), policy_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(ids: &[&str]) -> Decision {
        Decision {
            verdict: Verdict::Allow(Permit::new(1)),
            policies: ids.iter().map(|s| s.to_string()).collect(),
            reason: None,
            policy_version: 1,
        }
    }

    fn review(n: u32, groups: &[&str], id: &str) -> Decision {
        Decision {
            verdict: Verdict::Review {
                approvals: n,
                approvers: groups.iter().map(|s| s.to_string()).collect(),
            },
            policies: vec![id.into()],
            reason: Some(format!("approval required by {id}")),
            policy_version: 1,
        }
    }

    #[test]
    fn combine_first_deny_wins() {
        let d = combine(
            vec![
                allow(&["a"]),
                review(1, &["dba"], "r"),
                Decision::deny(vec!["f1".into()], "first".into(), 1),
                Decision::deny(vec!["f2".into()], "second".into(), 1),
            ],
            1,
        );
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason.as_deref(), Some("first"));
        assert_eq!(d.policies, vec!["f1"]);
    }

    #[test]
    fn combine_review_takes_max_and_union() {
        let d = combine(
            vec![
                allow(&["a"]),
                review(1, &["dba"], "r1"),
                review(2, &["sec", "dba"], "r2"),
            ],
            1,
        );
        assert_eq!(
            d.verdict,
            Verdict::Review {
                approvals: 2,
                approvers: vec!["dba".into(), "sec".into()]
            }
        );
        assert_eq!(d.policies, vec!["a", "r1", "r2"]);
        assert_eq!(d.reason.as_deref(), Some("approval required by r1"));
        assert_eq!(d.audit_verdict(), event::Verdict::Review);
    }

    #[test]
    fn combine_all_allowed_unions_policies() {
        let d = combine(vec![allow(&["a", "b"]), allow(&["b", "c"])], 1);
        assert!(d.is_allowed());
        assert!(d.permit().is_some());
        assert_eq!(d.policies, vec!["a", "b", "c"]);
    }

    #[test]
    fn combine_nothing_is_denied() {
        let d = combine(Vec::new(), 1);
        assert!(!d.is_allowed());
        assert_eq!(d.audit_verdict(), event::Verdict::Deny);
    }
}

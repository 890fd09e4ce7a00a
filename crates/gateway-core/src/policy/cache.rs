//! Decisions cached per policy version. A Cedar evaluation costs about as much as the
//! proxy's whole per-statement budget, while a busy client repeats a handful of statement
//! shapes, so most decisions are answered from here.
//!
//! The cache is keyed by everything the Cedar request is built from, and nothing else:
//! the principal (issuer, subject, groups, kept claims), the connection and the action with
//! its context. It belongs to one [`super::PolicyEngine`], so a reload starts empty.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use std::collections::hash_map::RandomState;

use super::decision::Decision;
use super::request::{ConnectionRef, PrincipalRef};
use crate::action::Action;
use crate::config::Protocol;

/// Shards keep lock hold times short when several sessions decide at once.
const SHARDS: usize = 16;

/// Total entries kept; past this an arbitrary entry of the shard is evicted.
pub(crate) const CAPACITY: usize = 16 * 1024;

/// The full request a decision was made for, compared on every hit so that a hash
/// collision can never hand one caller another caller's decision.
struct Key {
    issuer: String,
    subject: String,
    groups: Vec<String>,
    claims: BTreeMap<String, String>,
    connection: String,
    protocol: Protocol,
    /// `Action::Sql` holds an `Arc`, so keeping it is a reference count, not a copy.
    action: Action,
}

impl Key {
    fn matches(&self, who: &PrincipalRef<'_>, conn: &ConnectionRef<'_>, action: &Action) -> bool {
        self.issuer == who.issuer
            && self.subject == who.subject
            && self.groups == who.groups
            && &self.claims == who.claims
            && self.connection == conn.name
            && self.protocol == conn.protocol
            && &self.action == action
    }
}

struct Entry {
    key: Key,
    decision: Decision,
}

/// A bounded, sharded map from request to decision.
pub(crate) struct DecisionCache {
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl DecisionCache {
    /// An empty cache holding at most about `capacity` decisions.
    pub fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// The hash of a request, computed once per lookup and reused for the insert.
    pub fn hash(&self, who: &PrincipalRef<'_>, conn: &ConnectionRef<'_>, action: &Action) -> u64 {
        self.hasher.hash_one((
            who.issuer,
            who.subject,
            who.groups,
            who.claims,
            conn.name,
            conn.protocol,
            action,
        ))
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (entries are whole values), so a poisoned lock is still usable.
        let i = (hash >> 32) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached decision for exactly this request.
    pub fn get(
        &self,
        hash: u64,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action: &Action,
    ) -> Option<Decision> {
        let shard = self.shard(hash);
        let entry = shard.get(&hash)?;
        entry
            .key
            .matches(who, conn, action)
            .then(|| entry.decision.clone())
    }

    /// Remember `decision` for this request.
    pub fn insert(
        &self,
        hash: u64,
        who: &PrincipalRef<'_>,
        conn: &ConnectionRef<'_>,
        action: &Action,
        decision: Decision,
    ) {
        let mut shard = self.shard(hash);
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            // Hash order is effectively random, so this evicts an arbitrary entry: cheap,
            // and good enough for a working set that is either small or not worth caching.
            if let Some(victim) = shard.keys().next().copied() {
                shard.remove(&victim);
            }
        }
        let key = Key {
            issuer: who.issuer.to_string(),
            subject: who.subject.to_string(),
            groups: who.groups.to_vec(),
            claims: who.claims.clone(),
            connection: conn.name.to_string(),
            protocol: conn.protocol,
            action: action.clone(),
        };
        shard.insert(hash, Entry { key, decision });
    }

    /// Number of cached decisions.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::decision::Verdict;

    #[test]
    fn stays_bounded_and_compares_the_whole_request() {
        let cache = DecisionCache::new(32);
        let groups = vec!["ci".to_string()];
        let claims = BTreeMap::new();
        let who = PrincipalRef {
            issuer: "builtin",
            subject: "a",
            groups: &groups,
            claims: &claims,
        };
        let deny = Decision {
            verdict: Verdict::Deny,
            policies: Vec::new(),
            reason: None,
            policy_version: 1,
        };
        for i in 0..1000 {
            let name = format!("conn{i}");
            let conn = ConnectionRef {
                name: &name,
                protocol: Protocol::Postgres,
            };
            let h = cache.hash(&who, &conn, &Action::Connect);
            cache.insert(h, &who, &conn, &Action::Connect, deny.clone());
        }
        assert!(cache.len() <= 32, "{}", cache.len());

        let conn = ConnectionRef {
            name: "orders",
            protocol: Protocol::Postgres,
        };
        let h = cache.hash(&who, &conn, &Action::Connect);
        cache.insert(h, &who, &conn, &Action::Connect, deny.clone());
        assert_eq!(cache.get(h, &who, &conn, &Action::Connect), Some(deny));
        // Same hash slot, different request (as after a collision): a miss, not a wrong hit.
        let other = PrincipalRef {
            subject: "b",
            ..who
        };
        assert_eq!(cache.get(h, &other, &conn, &Action::Connect), None);
    }
}

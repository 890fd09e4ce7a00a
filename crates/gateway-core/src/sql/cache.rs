//! The shape-keyed classification cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::limits::MAX_TEXT_BYTES;
use super::{Dialect, LexOptions, classify, lexer};
use crate::action::SqlStatement;

/// Classified statements of one query text.
pub type Classified = Arc<[Arc<SqlStatement>]>;

type Key = (String, LexOptions);

/// Thread-safe classifier with a bounded cache keyed by (fingerprint, lexer options).
///
/// Two texts with the same key differ only in literal values (the key is the fingerprint
/// with each literal's class, string or number, kept), and classification is computed from
/// canonical text that does not contain literal values, so they share one result.
pub struct Classifier {
    cache: Mutex<Clock>,
}

impl Classifier {
    /// A classifier caching up to `capacity` distinct shapes (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Classifier {
            cache: Mutex::new(Clock::new(capacity)),
        }
    }

    /// Classifies `text`, from the cache when its shape has been seen before.
    pub fn classify(&self, text: &str, opts: LexOptions) -> Classified {
        if text.len() > MAX_TEXT_BYTES {
            // Refused unscanned; not worth a cache slot.
            return build(text, opts);
        }
        if let Some(key) = cache_key(text, opts) {
            if let Some(hit) = self.lock().get(&key) {
                return hit;
            }
            let fresh = build(text, opts);
            self.lock().insert(key, fresh.clone());
            fresh
        } else {
            build(text, opts)
        }
    }

    /// Number of cached shapes.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clock> {
        // The cache holds no invariant a panicking reader could break.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("cached", &self.len())
            .finish()
    }
}

/// The cache key, or `None` when the text must not share a cached result: the scanner gave
/// up, or backslashes make PostgreSQL text unknown under standard_conforming_strings=off (the
/// key does not record them). The dialect is part of the key: one text can mean different
/// things in PostgreSQL and T-SQL.
fn cache_key(text: &str, opts: LexOptions) -> Option<Key> {
    if opts.dialect == Dialect::Postgres && !opts.standard_conforming_strings && text.contains('\\')
    {
        return None;
    }
    Some((lexer::cache_key(text, opts)?, opts))
}

fn build(text: &str, opts: LexOptions) -> Classified {
    classify::classify(text, opts)
        .into_iter()
        .map(Arc::new)
        .collect()
}

/// A bounded map with clock (second-chance) eviction: an approximation of LRU that needs no
/// list surgery on a hit.
struct Clock {
    capacity: usize,
    map: HashMap<Key, usize>,
    slots: Vec<Slot>,
    hand: usize,
}

struct Slot {
    key: Key,
    value: Classified,
    referenced: bool,
}

impl Clock {
    fn new(capacity: usize) -> Self {
        Clock {
            capacity,
            map: HashMap::with_capacity(capacity.min(4096)),
            slots: Vec::with_capacity(capacity.min(4096)),
            hand: 0,
        }
    }

    fn get(&mut self, key: &Key) -> Option<Classified> {
        let &i = self.map.get(key)?;
        let slot = self.slots.get_mut(i)?;
        slot.referenced = true;
        Some(slot.value.clone())
    }

    fn insert(&mut self, key: Key, value: Classified) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&i) = self.map.get(&key) {
            if let Some(slot) = self.slots.get_mut(i) {
                slot.value = value;
                slot.referenced = true;
            }
            return;
        }
        if self.slots.len() < self.capacity {
            self.map.insert(key.clone(), self.slots.len());
            self.slots.push(Slot {
                key,
                value,
                referenced: false,
            });
            return;
        }
        // Sweep: clear reference bits until an unreferenced slot comes round (at most one
        // full turn plus one step).
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let Some(slot) = self.slots.get_mut(i) else {
                return;
            };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let old = std::mem::replace(
                slot,
                Slot {
                    key: key.clone(),
                    value,
                    referenced: false,
                },
            );
            self.map.remove(&old.key);
            self.map.insert(key, i);
            return;
        }
    }
}

//! Scripted faults for the in-memory twins: "fail the next n calls of this operation with
//! this class", and a count of every call, so a test can both cause a failure and check
//! what was (or was not) called.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

use crate::error::ErrorClass;

#[derive(Debug)]
pub struct FaultPlan<K> {
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    planned: HashMap<K, VecDeque<ErrorClass>>,
    calls: HashMap<K, u64>,
}

impl<K> Default for FaultPlan<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                planned: HashMap::new(),
                calls: HashMap::new(),
            }),
        }
    }
}

impl<K: Eq + Hash + Copy> FaultPlan<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `times` calls of `op` fail with `class`.
    pub fn fail_next(&self, op: K, class: ErrorClass, times: usize) {
        self.lock()
            .planned
            .entry(op)
            .or_default()
            .extend(std::iter::repeat_n(class, times));
    }

    /// Counts a call of `op`; the class it must fail with, if one is planned.
    pub fn call(&self, op: K) -> Option<ErrorClass> {
        let mut s = self.lock();
        *s.calls.entry(op).or_default() += 1;
        s.planned.get_mut(&op).and_then(VecDeque::pop_front)
    }

    /// Calls of `op` so far, failed ones included.
    pub fn calls(&self, op: K) -> u64 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }
}

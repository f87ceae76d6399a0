//! Which offenders are due: a partition is fixed only after it offends in `polls` polls in a
//! row with the same replica list. A topic being created, or a reassignment someone else
//! runs, changes the list or settles within a poll or two; acting on the first sighting
//! would race them.

use std::collections::HashMap;

/// Offending partitions over consecutive polls.
#[derive(Debug, Clone)]
pub struct Persistence {
    polls: u32,
    /// (topic, partition) → (the replica list last seen offending, consecutive polls).
    seen: HashMap<(String, i32), (Vec<i32>, u32)>,
}

impl Persistence {
    /// `polls` of at least 1 (1: due on first sight).
    pub fn new(polls: u32) -> Self {
        Self {
            polls: polls.max(1),
            seen: HashMap::new(),
        }
    }

    /// Records one poll's offenders (topic, partition, current replicas) and returns those
    /// now due, in the order given. A partition absent from a poll, or seen with another
    /// replica list, starts over; so memory is bounded by the offenders of the last poll.
    pub fn observe<'a>(
        &mut self,
        offenders: impl IntoIterator<Item = (&'a str, i32, &'a [i32])>,
    ) -> Vec<(String, i32)> {
        let mut next = HashMap::new();
        let mut due = Vec::new();
        for (topic, partition, replicas) in offenders {
            let key = (topic.to_owned(), partition);
            let count = match self.seen.get(&key) {
                Some((before, n)) if before.as_slice() == replicas => n.saturating_add(1),
                _ => 1,
            };
            if count >= self.polls {
                due.push(key.clone());
            }
            next.insert(key, (replicas.to_vec(), count));
        }
        self.seen = next;
        due
    }

    /// Forgets a partition (after it was fixed, so a relapse counts from one).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.seen.remove(&(topic.to_owned(), partition));
    }

    /// Partitions currently counted.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_after_the_polls_in_a_row_with_the_same_list() {
        let mut p = Persistence::new(2);
        let a: &[i32] = &[0, 1, 2];
        assert!(p.observe([("t", 0, a)]).is_empty());
        assert_eq!(p.observe([("t", 0, a)]), [("t".to_owned(), 0)]);
        assert_eq!(p.observe([("t", 0, a)]), [("t".to_owned(), 0)]);
        // Another list (someone reassigned it): start over.
        let b: &[i32] = &[0, 1, 3];
        assert!(p.observe([("t", 0, b)]).is_empty());
        // Absent from a poll (fixed, or deleted): start over.
        assert!(p.observe([]).is_empty());
        assert!(p.is_empty());
        assert!(p.observe([("t", 0, b)]).is_empty());
        p.forget("t", 0);
        assert!(p.observe([("t", 0, b)]).is_empty());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn one_poll_means_at_once_and_zero_is_one() {
        for polls in [0, 1] {
            let mut p = Persistence::new(polls);
            let a: &[i32] = &[5];
            assert_eq!(p.observe([("x", 3, a)]), [("x".to_owned(), 3)]);
        }
    }
}

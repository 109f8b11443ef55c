//! What the SQL backends share of retention's compaction.

use hive_core::clock::Timestamp;

/// A candidate for compaction: a terminal event's feed cursor, its task and
/// when it was stored (the task's end).
pub(crate) type Candidate = (i64, String, i64);

/// The candidates one compaction call takes from `rows` (terminal events in
/// feed order, `limit + 1` of them read): the leading ones that ended before
/// `ended_before`, at most `limit`; and whether more are due.
pub(crate) fn due(
    rows: &[Candidate],
    ended_before: Timestamp,
    limit: usize,
) -> (&[Candidate], bool) {
    let n = rows
        .iter()
        .take_while(|(_, _, at)| *at < ended_before.as_millis())
        .count();
    (&rows[..n.min(limit)], n > limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_leading_ended_rows_up_to_the_limit() {
        let rows: Vec<Candidate> = [(1, 10), (2, 20), (3, 30), (4, 40)]
            .into_iter()
            .map(|(c, at)| (c, format!("t{c}"), at))
            .collect();
        let at = Timestamp::from_millis;
        assert_eq!(due(&rows, at(25), 3).0.len(), 2);
        assert!(!due(&rows, at(25), 3).1);
        assert_eq!(due(&rows, at(100), 3).0.len(), 3);
        assert!(due(&rows, at(100), 3).1, "a fourth is due");
        assert!(due(&rows, at(5), 3).0.is_empty());
    }
}

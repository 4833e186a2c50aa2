//! Retention math for `expire` (issue 10): which backups or snapshots to keep, by count, by age and
//! grandfather-father-son (the newest item in each of the last N days, weeks, months, years that
//! have one). Plain functions over synthetic histories, unit-tested.
//!
//! Invariant (design.md rule 6): the newest valid item is always kept, whatever the policy says.
//! Items that are not valid (incomplete, damaged) never count towards a bucket and are never the
//! reason something else is removed. Items dated in the future (more than [`CLOCK_SKEW`] past
//! `now`: a clock that was wrong, or a manifest made to look newest) are kept, never count as the
//! newest valid item and take no bucket, so they cannot push a real backup out.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N valid items.
    pub keep_last: usize,
    /// Keep every valid item younger than this.
    pub keep_within: Option<Duration>,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    pub time: SystemTime,
    pub valid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Why it is kept ("newest valid", "last 3", "within 7 days", "daily", ...), or why it goes.
    pub reasons: Vec<&'static str>,
}

/// A GFS level: its name, how many buckets it keeps, and which bucket a time falls in.
type Bucketing<'a> = (&'static str, usize, &'a dyn Fn(SystemTime) -> i64);

fn days(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64 / 86_400
}

/// How far past `now` an item's time may lie and still count (clocks of two hosts disagree).
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Is `time` later than `now` plus [`CLOCK_SKEW`]?
pub fn in_the_future(time: SystemTime, now: SystemTime) -> bool {
    time > now + CLOCK_SKEW
}

/// Decides for every item; the result is in the order of `items`.
pub fn decide(items: &[Item], policy: &Policy, now: SystemTime) -> Vec<Decision> {
    let mut order: Vec<usize> =
        (0..items.len()).filter(|&i| items[i].valid && !in_the_future(items[i].time, now)).collect();
    order.sort_by(|&a, &b| items[b].time.cmp(&items[a].time)); // newest first
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); items.len()];
    for (i, item) in items.iter().enumerate() {
        if in_the_future(item.time, now) {
            reasons[i].push("dated in the future");
        }
    }
    if let Some(&newest) = order.first() {
        reasons[newest].push("newest valid");
    }
    for &i in order.iter().take(policy.keep_last) {
        reasons[i].push("keep_last");
    }
    if let Some(window) = policy.keep_within {
        for &i in &order {
            if now.duration_since(items[i].time).unwrap_or_default() <= window {
                reasons[i].push("keep_within");
            }
        }
    }
    let buckets: [Bucketing; 4] = [
        ("daily", policy.daily, &|t| days(t)),
        ("weekly", policy.weekly, &|t| (days(t) + 3).div_euclid(7)), // weeks start on Monday
        ("monthly", policy.monthly, &|t| {
            let (y, m, _) = crate::time::civil_from_days(days(t));
            y * 12 + m as i64
        }),
        ("yearly", policy.yearly, &|t| crate::time::civil_from_days(days(t)).0),
    ];
    for (name, count, bucket_of) in buckets {
        let mut seen = HashSet::new();
        for &i in &order {
            if seen.len() >= count {
                break;
            }
            if seen.insert(bucket_of(items[i].time)) {
                reasons[i].push(name);
            }
        }
    }
    items
        .iter()
        .zip(reasons)
        .map(|(item, reasons)| {
            let keep = !reasons.is_empty();
            let reasons = if keep {
                reasons
            } else if item.valid {
                vec!["outside the policy"]
            } else {
                vec!["not valid"]
            };
            Decision { id: item.id.clone(), keep, reasons }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::parse_time;

    fn history(times: &[&str]) -> Vec<Item> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Item { id: format!("b{i}"), time: parse_time(t).unwrap(), valid: true })
            .collect()
    }

    fn kept(items: &[Item], policy: &Policy, now: &str) -> Vec<String> {
        decide(items, policy, parse_time(now).unwrap()).into_iter().filter(|d| d.keep).map(|d| d.id).collect()
    }

    #[test]
    fn the_newest_valid_item_survives_any_policy() {
        let mut items = history(&["2026-01-01 00:00:00", "2026-02-01 00:00:00", "2026-03-01 00:00:00"]);
        assert_eq!(kept(&items, &Policy::default(), "2026-11-22 00:00:00"), vec!["b2"]);
        items[2].valid = false; // the newest is damaged: the newest *valid* one stays
        let decisions = decide(&items, &Policy::default(), parse_time("2026-11-22 00:00:00").unwrap());
        assert_eq!(decisions.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect::<Vec<_>>(), vec!["b1"]);
        assert_eq!(decisions[2].reasons, vec!["not valid"]);
    }

    #[test]
    fn an_item_dated_in_the_future_is_kept_but_never_pushes_a_real_one_out() {
        let items = history(&["2026-11-20 00:00:00", "2026-11-21 00:00:00", "2099-01-01 00:00:00"]);
        let decisions = decide(&items, &Policy::default(), parse_time("2026-11-22 00:00:00").unwrap());
        assert_eq!(decisions[1].reasons, vec!["newest valid"], "the newest real backup stays the newest valid");
        assert_eq!(decisions[2].reasons, vec!["dated in the future"]);
        assert!(decisions[2].keep && !decisions[0].keep);
        // With a daily policy, the future item takes no day's bucket either.
        let policy = Policy { keep_last: 1, daily: 1, ..Policy::default() };
        assert_eq!(kept(&items, &policy, "2026-11-22 00:00:00"), vec!["b1", "b2"]);
        // A few minutes of clock skew is not the future.
        let skewed = history(&["2026-11-22 00:04:00"]);
        assert_eq!(
            decide(&skewed, &Policy::default(), parse_time("2026-11-22 00:00:00").unwrap())[0].reasons,
            vec!["newest valid"]
        );
    }

    #[test]
    fn grandfather_father_son_keeps_one_per_bucket() {
        // Two backups a day for 60 days, from 2026-09-01 (a Tuesday).
        let mut times = Vec::new();
        for day in 0..60 {
            let date = UNIX_EPOCH + Duration::from_secs((20_697 + day) * 86_400); // 2026-09-01
            times.push(date + Duration::from_secs(3 * 3600));
            times.push(date + Duration::from_secs(15 * 3600));
        }
        let items: Vec<Item> =
            times.iter().enumerate().map(|(i, t)| Item { id: format!("b{i}"), time: *t, valid: true }).collect();
        let policy = Policy { daily: 7, weekly: 4, monthly: 3, ..Policy::default() };
        let now = crate::backups::format_utc(*times.last().unwrap());
        let kept = kept(&items, &policy, &now);
        // 2026-10-30 is a Friday. Daily: the evening backups of Oct 24..30 (days 53..59). Weekly
        // (weeks start on Monday): Oct 26's week is covered by Oct 30, then Sun Oct 25 (b109, also
        // daily), Sun Oct 18 (b95), Sun Oct 11 (b81). Monthly: October (b119), September's last
        // (b59); August has none.
        let expected: Vec<String> =
            [59, 81, 95, 107, 109, 111, 113, 115, 117, 119].iter().map(|i| format!("b{i}")).collect();
        assert_eq!(kept, expected);
    }

    #[test]
    fn count_and_age_combine() {
        let items = history(&[
            "2026-11-01 00:00:00",
            "2026-11-10 00:00:00",
            "2026-11-18 00:00:00",
            "2026-11-20 00:00:00",
            "2026-11-21 00:00:00",
        ]);
        let policy = Policy { keep_last: 2, keep_within: Some(Duration::from_secs(5 * 86_400)), ..Policy::default() };
        assert_eq!(kept(&items, &policy, "2026-11-22 00:00:00"), vec!["b2", "b3", "b4"]);
    }
}

/// The WAL files `expire` may remove once the oldest retained base backup starts at
/// `oldest_start` (an LSN): every segment (of any timeline), `.partial` and `.backup` file that
/// ends at or before that position. Timeline history files are always kept: they are tiny and a
/// recovery across timelines needs every one of them. With no retained backup nothing is removed.
pub fn wal_to_expire(
    files: &[crate::wal::WalFileName],
    oldest_start: Option<crate::backups::Lsn>,
    segment_size: u32,
) -> Vec<String> {
    use crate::wal::WalFileKind;
    let Some(oldest) = oldest_start else { return Vec::new() };
    let first_needed = oldest.segment(segment_size);
    files
        .iter()
        .filter(|f| f.kind != WalFileKind::History)
        .filter(|f| {
            // The segment a file belongs to (a .backup file's name starts with its segment's).
            let segment = crate::wal::WalFileName::parse(&f.name[..24]).ok().and_then(|s| s.position(segment_size));
            segment.is_some_and(|(_, number)| number < first_needed)
        })
        .map(|f| f.name.clone())
        .collect()
}

/// Packs no retained manifest references, older than `grace` (a running backup may be writing a
/// pack its manifest does not list yet; its packs are younger than the grace period).
pub fn packs_to_expire<'a>(
    packs: &'a [crate::store::ObjectInfo],
    referenced: &HashSet<String>,
    grace: Duration,
    now: SystemTime,
) -> Vec<&'a crate::store::ObjectInfo> {
    packs
        .iter()
        .filter(|p| !referenced.contains(p.key.rsplit('/').next().unwrap_or("")))
        .filter(|p| p.last_modified.is_some_and(|m| now.duration_since(m).unwrap_or_default() >= grace))
        .collect()
}

#[cfg(test)]
mod wal_tests {
    use super::*;
    use crate::backups::Lsn;
    use crate::wal::WalFileName;

    #[test]
    fn wal_before_the_oldest_retained_backup_goes_history_files_stay() {
        let names = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003",
            "00000002.history",
            "000000010000000000000004.partial",
            "000000020000000000000004",
        ];
        let files: Vec<WalFileName> = names.iter().map(|n| WalFileName::parse(n).unwrap()).collect();
        let seg = 16 << 20;
        assert!(wal_to_expire(&files, None, seg).is_empty(), "no retained backup: keep everything");
        // The oldest retained backup starts in segment 3.
        let gone = wal_to_expire(&files, Some(Lsn(3 * seg as u64 + 0x28)), seg);
        assert_eq!(
            gone,
            vec!["000000010000000000000001", "000000010000000000000002", "000000010000000000000002.00000028.backup"]
        );
    }

    #[test]
    fn only_old_unreferenced_packs_go() {
        let now = SystemTime::now();
        let pack = |name: &str, age: u64| crate::store::ObjectInfo {
            key: format!("c/packs/ab/{name}"),
            size: 1,
            last_modified: Some(now - Duration::from_secs(age)),
        };
        let packs = vec![pack("kept", 10_000), pack("old", 10_000), pack("fresh", 10)];
        let referenced: HashSet<String> = ["kept".to_string()].into();
        let gone = packs_to_expire(&packs, &referenced, Duration::from_secs(3600), now);
        assert_eq!(gone.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), vec!["c/packs/ab/old"]);
    }
}

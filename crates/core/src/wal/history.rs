//! Timeline history files (`00000002.history`): each line names an ancestor timeline and the LSN
//! where its successor branched off, oldest first; the last line is the direct parent.

use super::Lsn;
use crate::error::Error;

/// Where a timeline branched off its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub parent: u32,
    /// The first LSN that belongs to the child timeline.
    pub at: Lsn,
}

/// The ancestors of a timeline, oldest first, from its history file (text PostgreSQL wrote:
/// `<parent tli>\t<switch lsn>\t<reason>`; blank and `#` lines are skipped). At most 64 KiB of
/// input is read.
pub fn parse(text: &str) -> Result<Vec<Switch>, Error> {
    let bad = |line: &str| Error::InvalidInput(format!("\"{}\" is not a timeline history line", line.escape_debug()));
    let mut switches: Vec<Switch> = Vec::new();
    for line in text.get(..text.len().min(64 << 10)).unwrap_or("").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let parent = fields.next().and_then(|f| f.parse::<u32>().ok()).ok_or_else(|| bad(line))?;
        let at = Lsn::parse(fields.next().ok_or_else(|| bad(line))?)?;
        if switches.last().is_some_and(|s| s.parent >= parent || s.at > at) {
            return Err(bad(line));
        }
        switches.push(Switch { parent, at });
    }
    Ok(switches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lines_give_each_ancestor_and_its_switch_point() {
        let text = "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-12-07 10:00:00+00\n";
        let switches = parse(text).unwrap();
        assert_eq!(switches, vec![Switch { parent: 1, at: Lsn(0x3000158) }, Switch { parent: 2, at: Lsn(0x5000000) }]);
        assert!(parse("1 nonsense").is_err());
        assert!(parse("2\t0/5000000\tx\n1\t0/3000000\ty").is_err(), "ancestors come oldest first");
        assert_eq!(parse("").unwrap(), vec![]);
    }
}

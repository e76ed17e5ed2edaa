//! The broker list as the engine sees it: the entry connected now, how
//! often the module moved to another entry, and the last outcome of each.

use crate::amqp::NodeReport;

/// What INFO shows of an entry never tried since the list changed.
pub const UNTRIED: &str = "untried";

/// The state of the broker list's entries.
#[derive(Debug, Default, Clone)]
pub struct Nodes {
    /// Address of the entry connected now (empty: none).
    pub now: String,
    /// The entry connected last (now, or before it was lost).
    last: Option<(usize, String)>,
    /// Connections made to another entry than the one connected before.
    pub failovers: u64,
    /// Per entry: its address and `connected`, `ok` (connected earlier,
    /// no error since) or its last error.
    entries: Vec<(String, String)>,
    /// Address of the last report (for the log).
    pub latest: String,
}

impl Nodes {
    /// Takes a report; true when it is a connection to another entry than
    /// the one connected before (a failover).
    pub fn report(&mut self, r: &NodeReport) -> bool {
        if self.entries.len() != r.count {
            self.entries = vec![(String::new(), UNTRIED.to_string()); r.count];
        }
        for e in &mut self.entries {
            if e.1 == "connected" {
                e.1 = "ok".into();
            }
        }
        self.latest = r.address.clone();
        let state = match &r.error {
            None => "connected".to_string(),
            Some(e) => format!("error: {e}"),
        };
        if let Some(e) = self.entries.get_mut(r.index) {
            *e = (r.address.clone(), state);
        }
        if r.error.is_some() {
            if self.now == r.address {
                self.now.clear();
            }
            return false;
        }
        self.now = r.address.clone();
        let me = (r.index, r.address.clone());
        let moved = self.last.as_ref().is_some_and(|l| *l != me);
        self.last = Some(me);
        if moved {
            self.failovers += 1;
        }
        moved
    }

    /// The connection ended without a report (closed on request).
    pub fn closed(&mut self) {
        self.now.clear();
    }

    /// Each address of the list in force with its state; an entry whose
    /// address changed since it was tried shows [`UNTRIED`].
    pub fn describe(&self, addresses: &[String]) -> Vec<(String, String)> {
        addresses
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let state = self
                    .entries
                    .get(i)
                    .filter(|(at, _)| at == a)
                    .map_or(UNTRIED, |(_, s)| s.as_str());
                (a.clone(), state.to_string())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: usize, error: Option<&str>) -> NodeReport {
        NodeReport {
            index,
            count: 3,
            address: format!("h{index}:1"),
            error: error.map(str::to_string),
            unverified: false,
        }
    }

    #[test]
    fn failovers_count_moves_to_another_entry() {
        let mut n = Nodes::default();
        assert!(!n.report(&r(0, Some("refused"))));
        assert!(
            !n.report(&r(1, None)),
            "the first connection is no failover"
        );
        assert_eq!(n.now, "h1:1");
        assert!(!n.report(&r(1, Some("lost"))));
        assert_eq!(n.now, "");
        assert!(!n.report(&r(1, None)), "back to the same entry");
        assert!(!n.report(&r(1, Some("lost"))));
        assert!(n.report(&r(2, None)));
        assert_eq!(n.failovers, 1);
        let addrs: Vec<String> = ["h0:1", "h1:1", "h2:1"].map(String::from).to_vec();
        let d = n.describe(&addrs);
        assert_eq!(d[0].1, "error: refused");
        assert_eq!(d[1].1, "error: lost");
        assert_eq!(d[2].1, "connected");
        let other: Vec<String> = ["x:1".to_string()].to_vec();
        assert_eq!(n.describe(&other)[0].1, UNTRIED);
    }
}

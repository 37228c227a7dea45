//! Which connection a call goes out on.
//!
//! By default callers share the connections round-robin, whatever the
//! number: in a cluster of N nodes, (N-1)/N of the calls reach a node that
//! is not their shard's leader and are forwarded. With `--route leader` the
//! bench routes as admit-client does (its "Leader routing"): each number's
//! calls go to the node that the number's last answer named in
//! `leader_hint`, and to the round-robin choice until one has. Both are
//! what a caller can see, so both are worth measuring.

use crate::conn::Chan;
use admit_proto::v1 as pb;
use pb::admit_send_client::AdmitSendClient;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The callers' connections and, with leader routing on, each number's
/// last-known leader.
pub struct Route {
    clients: Vec<AdmitSendClient<Chan>>,
    /// Per target (in `--target` order), its connections' indices.
    by_target: Vec<Vec<usize>>,
    /// The targets' `host:port`, to match a `leader_hint`'s address.
    addrs: Vec<String>,
    /// Per number index: the leader's target index + 1; 0 = not known.
    /// Empty when leader routing is off.
    leader: Vec<AtomicUsize>,
}

/// `host:port` of a target or an address, without a scheme or a slash.
fn host_port(s: &str) -> &str {
    let s = s.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    s.trim_end_matches('/')
}

impl Route {
    /// `chans[i]` must be connected to `targets[i % targets.len()]`, as
    /// `connect` makes them; `numbers` > 0 turns leader routing on.
    pub fn new(chans: &[Chan], targets: &str, numbers: usize) -> Self {
        let addrs: Vec<String> = targets
            .split(',')
            .map(|t| host_port(t).to_owned())
            .collect();
        let mut by_target = vec![Vec::new(); addrs.len()];
        for i in 0..chans.len() {
            by_target[i % addrs.len()].push(i);
        }
        Self {
            clients: chans
                .iter()
                .map(|c| AdmitSendClient::new(c.clone()))
                .collect(),
            by_target,
            addrs,
            leader: (0..numbers).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The client caller `w` uses for a call about number index `number`.
    pub fn client(&self, w: usize, number: usize) -> AdmitSendClient<Chan> {
        if let Some(l) = self.leader.get(number) {
            let known = l.load(Ordering::Relaxed);
            if known > 0 {
                let conns = &self.by_target[known - 1];
                if !conns.is_empty() {
                    return self.clients[conns[w % conns.len()]].clone();
                }
            }
        }
        self.clients[w % self.clients.len()].clone()
    }

    /// The client caller `w` uses when no number decides (round-robin).
    pub fn any(&self, w: usize) -> AdmitSendClient<Chan> {
        self.clients[w % self.clients.len()].clone()
    }

    /// Remembers the leader an answer about number index `number` named
    /// (ignored when leader routing is off or the address is not a target).
    pub fn learn(&self, number: usize, hint: Option<&pb::NodeRef>) {
        let (Some(slot), Some(hint)) = (self.leader.get(number), hint) else {
            return;
        };
        let addr = host_port(&hint.address);
        if let Some(t) = self.addrs.iter().position(|a| a == addr) {
            slot.store(t + 1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn addresses_compare_without_scheme_or_slash() {
        assert_eq!(host_port("http://127.0.0.1:50051"), "127.0.0.1:50051");
        assert_eq!(host_port(" https://a:1/ "), "a:1");
        assert_eq!(host_port("127.0.0.1:50052"), "127.0.0.1:50052");
    }
}

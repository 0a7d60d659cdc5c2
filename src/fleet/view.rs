//! The fleet as an operator sees it: every live replica's card, and what they disagree on.

use serde_json::{json, Value};

use super::wire::ReplicaCard;
use super::{lock, mask_password, Fleet};

impl Fleet {
    /// `fleet` in `GET /canary/status`.
    pub fn view(&self, mine: &ReplicaCard) -> Value {
        let up = self.is_up();
        let cards = if up {
            // Ours as it is now; the others' as of their last slice.
            let mut c = lock(&self.cards).clone();
            let mut fresh = mine.clone();
            if let Some(last) = c.iter().find(|c| c.replica == mine.replica) {
                fresh.requests = last.requests;
            }
            c.retain(|c| c.replica != mine.replica);
            c.push(fresh);
            c.sort_by(|a, b| a.replica.cmp(&b.replica));
            c
        } else {
            vec![mine.clone()]
        };
        let warning = if up {
            disagreement(&cards)
        } else {
            Some(format!(
                "Redis ({}) is out of reach: this replica serves and judges alone",
                mask_password(&self.config.redis)
            ))
        };
        json!({
            "name": self.config.name,
            "replica": self.config.replica,
            "redis": if up { "up" } else { "down" },
            "replicas_seen": cards.len(),
            "replicas": cards.iter().map(|c| json!({
                "replica": c.replica, "stable_version": c.stable_version,
                "canary_version": c.canary_version, "traffic_percent": c.traffic_percent,
                "state": c.state, "evaluate_every_ms": c.evaluate_every_ms,
                "requests_last_slice": c.requests,
            })).collect::<Vec<_>>(),
            "agree": warning.is_none(),
            "warning": warning,
        })
    }
}

/// Replicas of one service should agree on versions, split and state; say where they do not.
pub(super) fn disagreement(cards: &[ReplicaCard]) -> Option<String> {
    let mut parts = Vec::new();
    type Field = fn(&ReplicaCard) -> String;
    let fields: [(&str, Field); 5] = [
        ("canary_version", |c| c.canary_version.clone()),
        ("stable_version", |c| c.stable_version.clone()),
        ("traffic_percent", |c| c.traffic_percent.to_string()),
        ("state", |c| c.state.clone()),
        ("evaluate_every", |c| format!("{}ms", c.evaluate_every_ms)),
    ];
    for (name, get) in fields {
        let mut values: Vec<String> = cards.iter().map(get).collect();
        values.sort();
        values.dedup();
        if values.len() > 1 {
            let who = cards
                .iter()
                .map(|c| format!("{}={}", c.replica, get(c)))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!("{name} differs ({who})"));
        }
    }
    (!parts.is_empty()).then(|| format!("replicas disagree: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disagreement_names_the_field_and_the_replicas() {
        let card = |r: &str, v: &str| ReplicaCard {
            replica: r.into(),
            stable_version: "v1".into(),
            canary_version: v.into(),
            traffic_percent: 10.0,
            state: "active".into(),
            evaluate_every_ms: 1000,
            requests: 0,
        };
        assert_eq!(disagreement(&[card("a", "v2"), card("b", "v2")]), None);
        let w = disagreement(&[card("a", "v2"), card("b", "v3")]).unwrap();
        assert!(w.contains("canary_version differs (a=v2, b=v3)"), "{w}");
    }
}

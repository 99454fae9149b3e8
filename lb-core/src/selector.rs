//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), validated once and then
//! matched without allocation.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Labels of an object, ordered so that every rendering of them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// A label selector as written in YAML.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RawSelector {
    #[serde(default)]
    pub match_labels: Labels,
    #[serde(default)]
    pub match_expressions: Vec<RawRequirement>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

/// A validated label selector. The empty selector matches every object, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Labels,
    exprs: Vec<(String, Op)>,
}

/// What is wrong with a selector; `field` is relative to the selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError {
    /// The field, relative to the selector (`matchExpressions[0].operator`).
    pub field: String,
    /// The value as written.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

impl Selector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Selector::default()
    }

    /// A selector matching exactly these labels.
    pub fn from_labels(labels: Labels) -> Self {
        Selector {
            labels,
            exprs: Vec::new(),
        }
    }

    pub(crate) fn from_raw(raw: &RawSelector) -> Result<Self, SelectorError> {
        for key in raw.match_labels.keys() {
            check_key(key, &format!("matchLabels.{key}"))?;
        }
        let mut exprs = Vec::with_capacity(raw.match_expressions.len());
        for (i, req) in raw.match_expressions.iter().enumerate() {
            let at = format!("matchExpressions[{i}]");
            check_key(&req.key, &format!("{at}.key"))?;
            let values: BTreeSet<String> = req.values.iter().cloned().collect();
            let op = match req.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError {
                        field: format!("{at}.values"),
                        value: String::new(),
                        message: format!("operator {} needs at least one value", req.operator),
                    });
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError {
                        field: format!("{at}.values"),
                        value: req.values.join(","),
                        message: format!("operator {} takes no values", req.operator),
                    });
                }
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => {
                    return Err(SelectorError {
                        field: format!("{at}.operator"),
                        value: other.to_string(),
                        message: "operator must be In, NotIn, Exists or DoesNotExist".into(),
                    });
                }
            };
            exprs.push((req.key.clone(), op));
        }
        Ok(Selector {
            labels: raw.match_labels.clone(),
            exprs,
        })
    }

    /// Whether it selects everything (it has no requirement).
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.exprs.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.exprs.iter().all(|(k, op)| match op {
                Op::In(vals) => labels.get(k).is_some_and(|v| vals.contains(v)),
                Op::NotIn(vals) => labels.get(k).is_none_or(|v| !vals.contains(v)),
                Op::Exists => labels.contains_key(k),
                Op::DoesNotExist => !labels.contains_key(k),
            })
    }
}

/// True when any selector of the list matches; an empty list matches everything (the rule that
/// MetalLB applies to `nodeSelectors`, `serviceSelectors` and pool selectors alike).
pub fn any_matches(selectors: &[Selector], labels: &Labels) -> bool {
    selectors.is_empty() || selectors.iter().any(|s| s.matches(labels))
}

fn check_key(key: &str, field: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(SelectorError {
            field: field.to_string(),
            value: key.to_string(),
            message: "not a valid label key".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(yaml: &str) -> Result<Selector, SelectorError> {
        let raw: RawSelector = serde_saphyr::from_str(yaml).expect("yaml");
        Selector::from_raw(&raw)
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::everything().matches(&labels(&[])));
        assert!(any_matches(&[], &labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let s = sel("matchLabels: {zone: a}\nmatchExpressions:\n- {key: tier, operator: In, values: [web, api]}\n- {key: legacy, operator: DoesNotExist}\n").unwrap();
        assert!(s.matches(&labels(&[("zone", "a"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("zone", "b"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("zone", "a"), ("tier", "web"), ("legacy", "")])));
    }

    #[test]
    fn not_in_matches_objects_without_the_key() {
        let s = sel("matchExpressions: [{key: env, operator: NotIn, values: [prod]}]").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn bad_operator_and_missing_values_are_errors() {
        let e = sel("matchExpressions: [{key: a, operator: Equals, values: [x]}]").unwrap_err();
        assert_eq!(e.field, "matchExpressions[0].operator");
        let e = sel("matchExpressions: [{key: a, operator: In}]").unwrap_err();
        assert_eq!(e.field, "matchExpressions[0].values");
        let e = sel("matchExpressions: [{key: a, operator: Exists, values: [x]}]").unwrap_err();
        assert_eq!(e.field, "matchExpressions[0].values");
        let e = sel("matchLabels: {'bad key!': x}").unwrap_err();
        assert_eq!(e.field, "matchLabels.bad key!");
    }

    #[test]
    fn prefixed_keys_are_valid() {
        assert!(sel("matchLabels: {kubernetes.io/hostname: n1}").is_ok());
    }
}

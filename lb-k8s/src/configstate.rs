//! ConfigurationState objects (MetalLB 0.15.3+): each component says whether its configuration
//! validates, so that tools reading MetalLB's objects keep working. The controller writes
//! `controller`; each speaker `speaker-<node>`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::crds::{
    ConfigurationResult, ConfigurationState, ConfigurationStateSpec, ConfigurationStateStatus,
};

/// The condition type MetalLB's config reconciler reports.
pub const CONDITION_TYPE: &str = "configReconcilerValid";

/// The object a component reports in: its name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// The ConfigurationState object's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl Reporter {
    /// The controller's object.
    pub fn controller() -> Reporter {
        Reporter {
            name: "controller".into(),
            labels: [("metallb.io/component-type".into(), "controller".into())].into(),
        }
    }

    /// A speaker's object.
    pub fn speaker(node: &str) -> Reporter {
        Reporter {
            name: format!("speaker-{node}"),
            labels: [
                ("metallb.io/component-type".into(), "speaker".into()),
                ("metallb.io/node-name".into(), node.into()),
            ]
            .into(),
        }
    }
}

/// The status for a configuration with these `errors` (none: valid).
pub fn status(errors: &[String], now: Time) -> ConfigurationStateStatus {
    let valid = errors.is_empty();
    ConfigurationStateStatus {
        result: Some(if valid {
            ConfigurationResult::Valid
        } else {
            ConfigurationResult::Invalid
        }),
        error_summary: (!valid).then(|| errors.join("\n")),
        conditions: vec![Condition {
            type_: CONDITION_TYPE.into(),
            status: if valid { "True" } else { "False" }.into(),
            reason: if valid {
                "Reconciled"
            } else {
                "ConfigurationError"
            }
            .into(),
            message: errors.join("\n"),
            last_transition_time: now,
            observed_generation: None,
        }],
    }
}

/// Writes `reporter`'s object in `namespace` (created when missing) with the status for
/// `errors`.
pub async fn report(
    client: Client,
    namespace: &str,
    reporter: &Reporter,
    errors: &[String],
) -> Result<(), kube::Error> {
    let api: Api<ConfigurationState> = Api::namespaced(client, namespace);
    if api.get_opt(&reporter.name).await?.is_none() {
        let obj = ConfigurationState {
            metadata: ObjectMeta {
                name: Some(reporter.name.clone()),
                namespace: Some(namespace.to_string()),
                labels: Some(reporter.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: ConfigurationStateSpec {},
            status: None,
        };
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let patch = serde_json::json!({ "status": status(errors, now) });
    api.patch_status(
        &reporter.name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

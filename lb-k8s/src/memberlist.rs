//! The membership key Secret (MetalLB's `memberlist`, key `secretkey`): speakers seal their
//! membership datagrams with it, and the controller creates it with a random key when it is
//! missing, as MetalLB's controller does with `--ml-secret-name`.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rand::RngCore;

/// The Secret's data key, as MetalLB's.
pub const SECRET_KEY: &str = "secretkey";

/// A fresh key: 128 random bytes in base64, as `openssl rand -base64 128` makes them.
pub fn random_key() -> String {
    let mut bytes = [0u8; 128];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Creates Secret `namespace/name` holding a random key unless it exists. Returns whether it
/// created it; another replica creating it at the same moment is not an error.
pub async fn ensure_secret(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if api.get_opt(name).await?.is_some() {
        return Ok(false);
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/component".to_string(),
                "speaker".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            ByteString(random_key().into_bytes()),
        )])),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

//! Server-side apply with the provider's field manager, reads where absence is an answer, and
//! deletes where "already gone" is success. Every object the provider creates carries the
//! managed-by label and an instance label, so everything it made can be found and removed.

use std::collections::BTreeMap;
use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::Cluster;
use super::error::KubeError;
use super::retry::{retry, Deadline};
use super::wait::wait_for;

/// Field manager for server-side apply: owns exactly the fields the provider sets.
pub const FIELD_MANAGER: &str = "terraform-provider-mesh";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "terraform-provider-mesh";
/// Which Terraform resource instance an object belongs to.
pub const INSTANCE_LABEL: &str = "mesh.tfmesh.dev/instance";

/// The standard labels for objects of resource instance `instance`.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (INSTANCE_LABEL.to_string(), instance.to_string()),
    ])
}

/// The objects' kind and name for messages, e.g. "Secret istio-system/cacerts".
fn describe<K: kube::Resource<DynamicType = ()>>(api: &Api<K>, name: &str) -> String {
    let _ = api;
    format!("{} {name}", K::kind(&()))
}

impl Cluster {
    /// Server-side applies `obj` (force: our fields are ours even if someone edited them),
    /// creating it when missing, adopting it when it exists. Returns the live object.
    pub async fn apply<K>(&self, api: &Api<K>, obj: &K, deadline: &Deadline) -> Result<K, KubeError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let action = format!("applying {}", describe(api, &name));
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(obj);
        retry(&self.name, &action, deadline, || {
            api.patch(&name, &params, &patch)
        })
        .await
    }

    /// The object, or `None` when it does not exist.
    pub async fn get_opt<K>(
        &self,
        api: &Api<K>,
        name: &str,
        deadline: &Deadline,
    ) -> Result<Option<K>, KubeError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    {
        let action = format!("reading {}", describe(api, name));
        retry(&self.name, &action, deadline, || api.get_opt(name)).await
    }

    /// Deletes the object; already gone is success. With `wait_gone`, returns only once the
    /// object has disappeared (finalizers done), watching rather than polling. Returns whether
    /// the object existed.
    pub async fn delete<K>(
        &self,
        api: &Api<K>,
        name: &str,
        wait_gone: bool,
        deadline: &Deadline,
    ) -> Result<bool, KubeError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + 'static,
    {
        let action = format!("deleting {}", describe(api, name));
        let params = DeleteParams::background();
        let deleted = retry(&self.name, &action, deadline, || async {
            match api.delete(name, &params).await {
                Ok(either) => Ok(Some(either)),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
        let Some(either) = deleted else {
            return Ok(false);
        };
        if wait_gone {
            // Left(obj): still there (finalizers pending); Right(status): already gone.
            if let either::Either::Left(obj) = either {
                let uid = obj.meta().uid.clone().unwrap_or_default();
                let what = format!("{} to be gone", describe(api, name));
                let gone = move |o: Option<&K>| {
                    o.is_none_or(|o| o.meta().uid.as_deref() != Some(uid.as_str()))
                };
                wait_for(self, api.clone(), name, &what, gone, deadline).await?;
            }
        }
        Ok(true)
    }
}

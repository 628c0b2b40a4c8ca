//! Server-side apply with the provider's field manager, reads where absence is an answer, and
//! deletes where "already gone" is success. Every object the provider creates carries the
//! managed-by label and an instance label, so everything it made can be found and removed.
//! What the provider brought into existence (rather than adopted) also says so in the cluster:
//! the created-by annotation, set only at creation, so that destroy decides what to delete from
//! the cluster itself and not from Terraform state a killed process may never have saved.
//!
//! Each helper comes twice: for typed objects (`apply`, `get_opt`, `delete`, `list`) and, with
//! the object's `DynamicType`, for any `kube::Resource` (`*_dynamic`), e.g. `DynamicObject` with
//! its `ApiResource` for kinds known only at run time (Istio's CRs, what an uninstall prunes).

use std::collections::BTreeMap;
use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
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

/// Which resource instance created the object (annotation value: the instance label's value).
/// Set only when the object did not exist before; an adopted object never carries it.
pub const CREATED_BY_ANNOTATION: &str = "mesh.tfmesh.dev/created-by";

/// Whether the object carries the mark of having been created by `instance`.
pub fn created_by(meta: &ObjectMeta, instance: &str) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(CREATED_BY_ANNOTATION))
        .is_some_and(|v| v == instance)
}

/// Adds the created-by mark of `instance` to an object about to be applied. Every later apply
/// of an object created so must keep adding it: server-side apply removes a field its manager
/// stops sending.
pub fn mark_created(meta: &mut ObjectMeta, instance: &str) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CREATED_BY_ANNOTATION.to_string(), instance.to_string());
}

/// Whether the object carries the instance label of `instance` (created or adopted by it).
pub fn has_instance_label(meta: &ObjectMeta, instance: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(INSTANCE_LABEL))
        .is_some_and(|v| v == instance)
}

/// The standard labels for objects of resource instance `instance`.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string()),
        (INSTANCE_LABEL.to_string(), instance.to_string()),
    ])
}

/// The object's kind and name for messages, e.g. "Secret cacerts".
fn describe<K: kube::Resource>(dt: &K::DynamicType, name: &str) -> String {
    format!("{} {name}", K::kind(dt))
}

impl Cluster {
    /// Server-side applies `obj` (force: our fields are ours even if someone edited them),
    /// creating it when missing, adopting it when it exists. Returns the live object.
    pub async fn apply<K>(&self, api: &Api<K>, obj: &K, deadline: &Deadline) -> Result<K, KubeError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
    {
        self.apply_dynamic(api, &(), obj, deadline).await
    }

    /// [`Cluster::apply`] for any resource type, `dt` naming its kind (an `ApiResource` for a
    /// `DynamicObject`). An object without `apiVersion`/`kind` gets them from `dt`.
    pub async fn apply_dynamic<K>(
        &self,
        api: &Api<K>,
        dt: &K::DynamicType,
        obj: &K,
        deadline: &Deadline,
    ) -> Result<K, KubeError>
    where
        K: kube::Resource + Clone + Debug + Serialize + DeserializeOwned,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let what = describe::<K>(dt, &name);
        let mut body = serde_json::to_value(obj).map_err(|e| KubeError::Config {
            cluster: self.name.clone(),
            message: format!("cannot encode {what}: {e}"),
        })?;
        // A DynamicObject built without TypeMeta serializes neither, and an apply needs both.
        if let Some(fields) = body.as_object_mut() {
            fields
                .entry("apiVersion")
                .or_insert_with(|| K::api_version(dt).into());
            fields.entry("kind").or_insert_with(|| K::kind(dt).into());
        }
        let action = format!("applying {what}");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
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
        self.get_opt_dynamic(api, &(), name, deadline).await
    }

    /// [`Cluster::get_opt`] for any resource type.
    pub async fn get_opt_dynamic<K>(
        &self,
        api: &Api<K>,
        dt: &K::DynamicType,
        name: &str,
        deadline: &Deadline,
    ) -> Result<Option<K>, KubeError>
    where
        K: kube::Resource + Clone + Debug + DeserializeOwned,
    {
        let action = format!("reading {}", describe::<K>(dt, name));
        retry(&self.name, &action, deadline, || api.get_opt(name)).await
    }

    /// The objects matching `params`. A kind the cluster does not serve (404 on the list, e.g.
    /// CRDs not installed) holds no objects: an empty list.
    pub async fn list<K>(
        &self,
        api: &Api<K>,
        params: &ListParams,
        deadline: &Deadline,
    ) -> Result<Vec<K>, KubeError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
    {
        self.list_dynamic(api, &(), params, deadline).await
    }

    /// [`Cluster::list`] for any resource type.
    pub async fn list_dynamic<K>(
        &self,
        api: &Api<K>,
        dt: &K::DynamicType,
        params: &ListParams,
        deadline: &Deadline,
    ) -> Result<Vec<K>, KubeError>
    where
        K: kube::Resource + Clone + Debug + DeserializeOwned,
    {
        let action = format!("listing {}", K::plural(dt));
        retry(&self.name, &action, deadline, || async {
            match api.list(params).await {
                Ok(l) => Ok(l.items),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })
        .await
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
        self.delete_dynamic(api, &(), name, wait_gone, deadline)
            .await
    }

    /// [`Cluster::delete`] for any resource type.
    pub async fn delete_dynamic<K>(
        &self,
        api: &Api<K>,
        dt: &K::DynamicType,
        name: &str,
        wait_gone: bool,
        deadline: &Deadline,
    ) -> Result<bool, KubeError>
    where
        K: kube::Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    {
        let action = format!("deleting {}", describe::<K>(dt, name));
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
                let what = format!("{} to be gone", describe::<K>(dt, name));
                let gone = move |o: Option<&K>| {
                    o.is_none_or(|o| o.meta().uid.as_deref() != Some(uid.as_str()))
                };
                wait_for(self, api.clone(), name, &what, gone, deadline).await?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_created_by_mark_names_one_instance() {
        let mut meta = ObjectMeta::default();
        assert!(!created_by(&meta, "mesh-cluster.c1"));
        meta.annotations = Some(BTreeMap::from([("other".to_string(), "x".to_string())]));
        mark_created(&mut meta, "mesh-cluster.c1");
        assert!(created_by(&meta, "mesh-cluster.c1"));
        assert!(!created_by(&meta, "mesh-cluster.c2"));
        assert_eq!(
            meta.annotations.unwrap()["other"],
            "x",
            "other annotations kept"
        );
    }
}

//! Write-only attributes (plugin protocol 6.8) over the wire: the schema flag, values that reach
//! plan and apply through the configuration but never a planned or applied state, and the
//! refusal of clients that do not announce support (Terraform before 1.11 would store them).

mod common;

use std::sync::Arc;

use common::*;
use terraform_provider_mesh::plugin::value::Type;
use terraform_provider_mesh::plugin::{
    Applied, Attribute, Block, Change, Ctx, Failure, NestedBlock, Plan, Provider, Resource, Schema,
    Value,
};

const VAULT: &str = "test_vault";
const PASSWORD: &str = "s3cret-Password-value";

/// A resource with write-only attributes that tries to leak them: its plan and its apply copy
/// the configured values into the state they return. `seen` reports what apply saw.
struct Vault;

#[tonic::async_trait]
impl Resource for Vault {
    fn type_name(&self) -> &'static str {
        VAULT
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("A resource for write-only tests.")
                .attr(Attribute::string("id", "Identifier.").computed().stable())
                .attr(
                    Attribute::string("password", "Stored password.")
                        .optional()
                        .sensitive(),
                )
                .attr(
                    Attribute::string("password_wo", "Write-only password.")
                        .optional()
                        .sensitive()
                        .write_only()
                        .stored_alternative("password"),
                )
                .attr(Attribute::number("password_wo_version", "Version marker.").optional())
                .attr(Attribute::string("seen", "What apply saw.").computed())
                .block(NestedBlock::single(
                    "nested",
                    Block::new("A nested block.")
                        .attr(Attribute::string("secret_wo", "Nested write-only.").write_only()),
                )),
        )
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        let leak = plan.config.get("password_wo").clone();
        plan.planned.set("password_wo", leak);
        plan.diags.warning(
            "client",
            format!(
                "write_only_attributes_allowed={}",
                plan.client.write_only_attributes_allowed
            ),
        );
    }

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        let mut state = change.config.clone();
        let len = change
            .config
            .get("password_wo")
            .as_str()
            .map_or(0, str::len);
        state.set("id", Value::from("v1"));
        state.set(
            "seen",
            Value::from(format!(
                "len={len} client_write_only={}",
                ctx.client.write_only_attributes_allowed
            )),
        );
        Ok(Applied::new(state))
    }

    async fn delete(&self, _: &Ctx, _: &Value, _: &[u8]) -> Result<(), Failure> {
        Ok(())
    }

    async fn read(
        &self,
        _: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        let mut state = state.clone();
        state.set("password_wo", Value::from("read back?"));
        Ok(Some(Applied {
            state,
            private: private.to_vec(),
        }))
    }
}

fn provider() -> Provider {
    let mut p = terraform_provider_mesh::provider();
    p.resources.push(Arc::new(Vault));
    p
}

fn ty() -> Type {
    Vault.schema().value_type()
}

/// A configuration in wire shape (the single block as a one-element list).
fn config(password_wo: Value, nested_wo: Value) -> Value {
    Value::object([
        ("id", Value::Null),
        ("password", Value::Null),
        ("password_wo", password_wo),
        ("password_wo_version", Value::from(1)),
        ("seen", Value::Null),
        (
            "nested",
            Value::List(vec![Value::object([("secret_wo", nested_wo)])]),
        ),
    ])
}

fn caps(write_only: bool) -> Option<pb::ClientCapabilities> {
    Some(pb::ClientCapabilities {
        deferral_allowed: true,
        write_only_attributes_allowed: write_only,
    })
}

async fn validate_with(
    p: &mut InProcess,
    config: &Value,
    caps: Option<pb::ClientCapabilities>,
) -> Vec<pb::Diagnostic> {
    p.client
        .validate_resource_config(pb::validate_resource_config::Request {
            type_name: VAULT.into(),
            config: dv(config, &ty()),
            client_capabilities: caps,
        })
        .await
        .expect("ValidateResourceConfig")
        .into_inner()
        .diagnostics
}

async fn plan_with(
    p: &mut InProcess,
    prior: &Value,
    config: &Value,
    caps: Option<pb::ClientCapabilities>,
) -> pb::plan_resource_change::Response {
    // Terraform proposes the configuration (merged with prior computed values).
    let mut proposed = config.clone();
    for k in ["id", "seen"] {
        proposed.set(k, prior.get(k).clone());
    }
    p.client
        .plan_resource_change(pb::plan_resource_change::Request {
            type_name: VAULT.into(),
            prior_state: if prior.is_null() {
                dv_null()
            } else {
                dv(prior, &ty())
            },
            proposed_new_state: dv(&proposed, &ty()),
            config: dv(config, &ty()),
            prior_private: vec![],
            provider_meta: None,
            client_capabilities: caps,
        })
        .await
        .expect("PlanResourceChange")
        .into_inner()
}

fn nested_wo(v: &Value) -> &Value {
    v.get("nested").as_list().expect("nested block")[0].get("secret_wo")
}

#[tokio::test]
async fn the_schema_carries_write_only_for_every_client() {
    let mut p = serve(provider()).await;
    let resp = p
        .client
        .get_provider_schema(pb::get_provider_schema::Request {})
        .await
        .expect("GetProviderSchema")
        .into_inner();
    let block = resp.resource_schemas[VAULT].block.clone().unwrap();
    let flag = |b: &pb::schema::Block, name: &str| {
        b.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.write_only)
    };
    assert_eq!(flag(&block, "password_wo"), Some(true));
    assert_eq!(flag(&block, "password"), Some(false));
    assert_eq!(flag(&block, "password_wo_version"), Some(false));
    assert_eq!(
        flag(block.block_types[0].block.as_ref().unwrap(), "secret_wo"),
        Some(true)
    );

    // mesh_cluster's root key: write-only and sensitive, its stored alternative neither
    // write-only nor gone; nothing else of the real provider is write-only.
    let cluster = resp.resource_schemas["mesh_cluster"].block.clone().unwrap();
    let root_ca = cluster
        .block_types
        .iter()
        .find(|b| b.type_name == "root_ca")
        .and_then(|b| b.block.clone())
        .unwrap();
    let wo = root_ca
        .attributes
        .iter()
        .find(|a| a.name == "private_key_pem_wo")
        .unwrap();
    assert!(wo.write_only && wo.sensitive && wo.optional && !wo.computed);
    let classic = root_ca
        .attributes
        .iter()
        .find(|a| a.name == "private_key_pem")
        .unwrap();
    assert!(!classic.write_only && classic.sensitive && classic.optional);
    fn write_only_names(b: &pb::schema::Block, at: &str, out: &mut Vec<String>) {
        for a in b.attributes.iter().filter(|a| a.write_only) {
            out.push(format!("{at}{}", a.name));
        }
        for nb in &b.block_types {
            if let Some(inner) = &nb.block {
                write_only_names(inner, &format!("{at}{}.", nb.type_name), out);
            }
        }
    }
    let mut all = Vec::new();
    for (name, schema) in &resp.resource_schemas {
        if name != VAULT {
            write_only_names(
                schema.block.as_ref().unwrap(),
                &format!("{name}."),
                &mut all,
            );
        }
    }
    assert_eq!(all, ["mesh_cluster.root_ca.private_key_pem_wo"]);
}

#[tokio::test]
async fn write_only_values_reach_apply_through_the_config_but_never_plan_or_state() {
    let mut p = serve(provider()).await;
    // ConfigureProvider announces the capabilities ApplyResourceChange does not carry.
    let configured = p
        .client
        .configure_provider(pb::configure_provider::Request {
            terraform_version: "1.11.4".into(),
            config: dv_raw(rmpv::Value::Map(vec![])),
            client_capabilities: caps(true),
        })
        .await
        .expect("ConfigureProvider")
        .into_inner();
    assert!(
        configured.diagnostics.is_empty(),
        "{}",
        show(&configured.diagnostics)
    );

    let cfg = config(Value::from(PASSWORD), Value::from("nested-secret"));
    let diags = validate_with(&mut p, &cfg, caps(true)).await;
    assert!(diags.is_empty(), "{}", show(&diags));

    let planned = plan_with(&mut p, &Value::Null, &cfg, caps(true)).await;
    assert!(
        error_paths(&planned.diagnostics).is_empty(),
        "{}",
        show(&planned.diagnostics)
    );
    // The plan saw the capability.
    assert!(planned
        .diagnostics
        .iter()
        .any(|d| d.detail == "write_only_attributes_allowed=true"));
    let planned_state = decode(&planned.planned_state, &ty());
    assert_eq!(planned_state.get("password_wo"), &Value::Null);
    assert_eq!(nested_wo(&planned_state), &Value::Null);
    assert_eq!(planned_state.get("password_wo_version").as_i64(), Some(1));
    assert!(planned_state.get("seen").is_unknown());

    let applied = apply(
        &mut p.client,
        VAULT,
        dv_null(),
        planned.planned_state.clone(),
        dv(&cfg, &ty()),
        planned.planned_private,
    )
    .await;
    assert!(
        applied.diagnostics.is_empty(),
        "{}",
        show(&applied.diagnostics)
    );
    let state = decode(&applied.new_state, &ty());
    // Apply read the value from the configuration; the state has none of it.
    assert_eq!(
        state.get("seen").as_str(),
        Some(format!("len={} client_write_only=true", PASSWORD.len()).as_str())
    );
    assert_eq!(state.get("password_wo"), &Value::Null);
    assert_eq!(nested_wo(&state), &Value::Null);
    let bytes = &applied.new_state.as_ref().unwrap().msgpack;
    assert!(
        !bytes
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the write-only value is in the applied state"
    );

    // Refresh cannot bring it back either.
    let refreshed = read(&mut p.client, VAULT, applied.new_state.clone(), vec![]).await;
    assert_eq!(
        decode(&refreshed.new_state, &ty()).get("password_wo"),
        &Value::Null
    );

    // The next plan, with the value still configured, changes nothing: the write-only value
    // is null on both sides.
    let again = plan_with(&mut p, &state, &cfg, caps(true)).await;
    assert!(error_paths(&again.diagnostics).is_empty());
    assert_eq!(decode(&again.planned_state, &ty()), state);
    assert!(again.requires_replace.is_empty());

    // A new version is an ordinary in-place change.
    let mut bumped = cfg.clone();
    bumped.set("password_wo_version", Value::from(2));
    let update = plan_with(&mut p, &state, &bumped, caps(true)).await;
    let planned = decode(&update.planned_state, &ty());
    assert_eq!(planned.get("password_wo_version").as_i64(), Some(2));
    assert_eq!(planned.get("password_wo"), &Value::Null);
    assert!(update.requires_replace.is_empty());
}

#[tokio::test]
async fn clients_without_write_only_support_are_refused_naming_the_attribute() {
    let mut p = serve(provider()).await;
    let cfg = config(Value::Unknown, Value::from("nested-secret"));
    // Terraform 1.0.3 sends no capabilities at all; Terraform 1.9-1.10 send them without
    // write-only support.
    for caps in [None, caps(false)] {
        let diags = validate_with(&mut p, &cfg, caps).await;
        assert_eq!(
            error_paths(&diags),
            ["password_wo", "nested[0].secret_wo"],
            "{}",
            show(&diags)
        );
        let first = &diags[0];
        assert_eq!(
            first.summary,
            "Write-only attribute not supported by this Terraform"
        );
        assert!(
            first.detail.contains("`password_wo` is write-only")
                && first.detail.contains("Terraform 1.11 or later")
                && first.detail.contains("set `password` instead"),
            "{}",
            first.detail
        );
        assert!(diags[1]
            .detail
            .contains("Upgrade Terraform, or leave it unset"));

        let planned = plan_with(&mut p, &Value::Null, &cfg, caps).await;
        assert_eq!(
            error_paths(&planned.diagnostics),
            ["password_wo", "nested[0].secret_wo"]
        );
        assert!(planned.planned_state.is_none());
    }
    // Diagnostics never carry the value.
    let cfg = config(Value::from(PASSWORD), Value::Null);
    let diags = validate_with(&mut p, &cfg, None).await;
    assert_eq!(error_paths(&diags), ["password_wo"]);
    assert!(!show(&diags).contains(PASSWORD));

    // Without write-only values, the same clients are served as always.
    let mut classic = config(Value::Null, Value::Null);
    classic.set("password", Value::from(PASSWORD));
    classic.set("password_wo_version", Value::Null);
    assert!(validate_with(&mut p, &classic, None).await.is_empty());
    let planned = plan_with(&mut p, &Value::Null, &classic, None).await;
    assert!(error_paths(&planned.diagnostics).is_empty());
    assert!(planned
        .diagnostics
        .iter()
        .any(|d| d.detail == "write_only_attributes_allowed=false"));
    let applied = apply(
        &mut p.client,
        VAULT,
        dv_null(),
        planned.planned_state,
        dv(&classic, &ty()),
        vec![],
    )
    .await;
    let state = decode(&applied.new_state, &ty());
    assert_eq!(state.get("password").as_str(), Some(PASSWORD));
    // No ConfigureProvider capabilities: apply's context says so.
    assert_eq!(
        state.get("seen").as_str(),
        Some("len=0 client_write_only=false")
    );
}

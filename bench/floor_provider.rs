//! A provider that does nothing, for `bench/topology.py`'s plugin floor: one resource type,
//! `floor_node` (`input` in, `output` = `input`, a UUID-sized `id`), served by this crate's own
//! protocol layer. The same graph built from it costs what any plugin provider costs Terraform
//! (three process starts per command, a gRPC round trip per RPC, state written after each
//! resource) and nothing of ours: the difference to `terraform_data` is the plugin protocol,
//! the difference from it to the mesh is our resources.
//!
//! Built by `bench/topology.py` (`cargo build --release --example terraform-provider-floor`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use terraform_provider_mesh::plugin::{
    self, Applied, Attribute, Block, Change, Ctx, Failure, Plan, Resource, Schema, Value,
};

struct FloorNode;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

#[tonic::async_trait]
impl Resource for FloorNode {
    fn type_name(&self) -> &'static str {
        "floor_node"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            0,
            Block::new("A node of the benchmark's graph: stores `input`, echoes it as `output`.")
                .attr(
                    Attribute::string("id", "A UUID-sized identifier.")
                        .computed()
                        .stable(),
                )
                .attr(
                    Attribute::string(
                        "input",
                        "Any string (a `jsonencode`d object in the benchmark).",
                    )
                    .optional(),
                )
                .attr(Attribute::string("output", "`input`, once applied.").computed()),
        )
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        let input = plan.config.get("input").clone();
        plan.planned.set("output", input);
    }

    async fn create(&self, _ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        let mut state = change.planned.clone();
        // As long as terraform_data's UUIDs, so that state sizes compare.
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), n);
        state.set("id", Value::from(id));
        Ok(Applied {
            state,
            private: Vec::new(),
        })
    }

    async fn delete(&self, _ctx: &Ctx, _prior: &Value, _private: &[u8]) -> Result<(), Failure> {
        Ok(())
    }

    async fn read(
        &self,
        _ctx: &Ctx,
        state: &Value,
        private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        Ok(Some(Applied {
            state: state.clone(),
            private: private.to_vec(),
        }))
    }
}

fn main() -> std::process::ExitCode {
    plugin::serve::run(plugin::Provider {
        address: "registry.terraform.io/tfmesh/floor",
        description: "Benchmark provider: the plugin floor of `bench/topology.py`.",
        resources: vec![Arc::new(FloorNode) as Arc<dyn Resource>],
        data_sources: Vec::new(),
    })
}

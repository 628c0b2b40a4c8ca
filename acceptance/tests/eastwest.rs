//! `mesh_eastwest_gateway` with real Terraform against kube-sim: objects field by field, the
//! load-balancer address (delayed, never arriving, changed), exposure toggled in place, drift
//! repair, destroy waiting for the Service to be gone.

use std::time::{Duration, Instant};

use mesh_acceptance::sim::Clusters;
use mesh_acceptance::{enabled, enabled_on_one_client, Workspace};
use serde_json::{json, Value};

const NS: &str = "istio-system";
const GW: &str = "istio-eastwestgateway";

/// Istio's CRDs for the Gateway CRs (the control-plane installer is not part of this test).
const CRDS: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gateways.networking.istio.io
spec:
  group: networking.istio.io
  scope: Namespaced
  names: {kind: Gateway, plural: gateways, singular: gateway, listKind: GatewayList}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: virtualservices.networking.istio.io
spec:
  group: networking.istio.io
  scope: Namespaced
  names: {kind: VirtualService, plural: virtualservices, singular: virtualservice, listKind: VirtualServiceList}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
";

fn setup(name: &str) -> (Workspace, Clusters) {
    let ws = Workspace::new(name);
    let sim = Clusters::start(&["c1"], &ws.dir);
    let crds = ws.write_file("crds.yaml", CRDS);
    sim.kubectl(
        "c1",
        &["apply", "--server-side", "-f", crds.to_str().unwrap()],
    );
    sim.kubectl("c1", &["create", "namespace", NS]);
    (ws, sim)
}

fn config(kubeconfig: &str, body: &str) -> String {
    format!(
        r#"
resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}

resource "mesh_eastwest_gateway" "gw" {{
  network = "network1"
{body}
  kubernetes {{
    config_path = "{kubeconfig}"
    # Known only after apply, as when the cluster is created in the same plan.
    config_context = mesh_root_ca.root.id != "" ? "c1" : ""
  }}
}}

output "address" {{
  value = mesh_eastwest_gateway.gw.address
}}

output "addresses" {{
  value = mesh_eastwest_gateway.gw.addresses
}}
"#
    )
}

fn ingress_ip(svc: &Value) -> Option<String> {
    svc["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .map(str::to_string)
}

fn resource_version(sim: &Clusters, kind: &str, name: &str) -> String {
    sim.find("c1", kind, NS, name)
        .unwrap_or_else(|| panic!("{kind} {name} missing"))["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn labels_of(o: &Value) -> &Value {
    &o["metadata"]["labels"]
}

#[test]
fn eastwest_gateway_lifecycle() {
    if !enabled("eastwest_gateway_lifecycle") {
        return;
    }
    let (ws, sim) = setup("eastwest");
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&config(&kc, ""));

    // Planning contacts no cluster.
    sim.reset_requests("c1");
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(plan.contains("Plan: 2 to add"), "{plan}");
    assert_eq!(sim.requests("c1"), 0, "terraform plan sent API requests");

    // Create with a load balancer that takes 1.5 s: the apply waits for it (on a watch) and
    // finishes right after the address is assigned.
    let lb_delay = Duration::from_millis(1500);
    sim.settings(
        "c1",
        json!({"loadbalancer": {"delay_ms": lb_delay.as_millis() as u64}}),
    );
    let started = Instant::now();
    let child = ws
        .command(&["apply", "-auto-approve", "-no-color"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start terraform apply");
    sim.wait_until(
        "c1",
        "the load balancer address",
        Duration::from_secs(60),
        |objs| {
            objs.iter().any(|o| {
                o["kind"] == "Service" && o["metadata"]["name"] == GW && ingress_ip(o).is_some()
            })
        },
    );
    let assigned = Instant::now();
    let out = child.wait_with_output().expect("terraform apply");
    let done = Instant::now();
    assert!(
        out.status.success(),
        "apply failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let create = sim.counters("c1");
    println!(
        "create: {} API requests {:?}; apply took {:?}; address assigned → apply done: {:?}",
        create.total,
        create.counts,
        done - started,
        done - assigned
    );
    assert!(
        done - started >= lb_delay,
        "apply did not wait for the address"
    );

    // The objects, field by field (facts §4.2, §4.4).
    let svc = sim.find("c1", "Service", NS, GW).expect("Service");
    let ip = ingress_ip(&svc).unwrap();
    assert_eq!(ws.output("address"), json!(ip));
    assert_eq!(ws.output("addresses"), json!([ip]));
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(labels_of(&svc)["topology.istio.io/network"], "network1");
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app": GW, "istio": "eastwestgateway"})
    );
    let ports: Vec<(String, i64)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["port"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("status-port".to_string(), 15021),
            ("tls".into(), 15443),
            ("tls-istiod".into(), 15012),
            ("tls-webhook".into(), 15017)
        ]
    );
    let dep = sim.find("c1", "Deployment", NS, GW).expect("Deployment");
    assert_eq!(dep["spec"]["replicas"], 1);
    let tpl = &dep["spec"]["template"];
    assert_eq!(
        tpl["metadata"]["annotations"]["inject.istio.io/templates"],
        "gateway"
    );
    assert_eq!(tpl["metadata"]["labels"]["sidecar.istio.io/inject"], "true");
    assert_eq!(tpl["metadata"]["labels"]["istio"], "eastwestgateway");
    assert_eq!(tpl["metadata"]["labels"]["app"], GW);
    assert_eq!(
        tpl["metadata"]["labels"]["topology.istio.io/network"],
        "network1"
    );
    assert_eq!(tpl["spec"]["serviceAccountName"], GW);
    let c = &tpl["spec"]["containers"][0];
    assert_eq!(c["name"], "istio-proxy");
    assert_eq!(c["image"], "auto");
    assert_eq!(
        c["env"],
        json!([{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": "network1"}])
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let role = sim.find("c1", "Role", NS, GW).expect("Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}])
    );
    let rb = sim.find("c1", "RoleBinding", NS, GW).expect("RoleBinding");
    assert_eq!(rb["roleRef"]["name"], GW);
    assert_eq!(rb["subjects"][0]["name"], GW);
    assert!(sim.find("c1", "ServiceAccount", NS, GW).is_some());
    assert!(sim.find("c1", "PodDisruptionBudget", NS, GW).is_none());
    let gw = sim
        .find("c1", "Gateway", NS, "cross-network-gateway")
        .expect("cross-network-gateway");
    assert_eq!(gw["apiVersion"], "networking.istio.io/v1");
    assert_eq!(
        gw["spec"],
        json!({
            "selector": {"istio": "eastwestgateway"},
            "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                         "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}],
        })
    );
    assert!(sim.find("c1", "Gateway", NS, "istiod-gateway").is_none());
    let mut ours = sim.ours("c1");
    ours.sort();
    assert_eq!(
        ours,
        [
            "Deployment/istio-eastwestgateway",
            "Gateway/cross-network-gateway",
            "Role/istio-eastwestgateway",
            "RoleBinding/istio-eastwestgateway",
            "Service/istio-eastwestgateway",
            "ServiceAccount/istio-eastwestgateway",
        ]
    );
    ws.assert_empty_plan();

    // Exposure toggled in place: istiod's Gateway and VirtualService come, the services'
    // Gateway goes, nothing else is touched and the address stays.
    let dep_rv = resource_version(&sim, "Deployment", GW);
    let svc_rv = resource_version(&sim, "Service", GW);
    ws.config(&config(
        &kc,
        "  expose_istiod   = true\n  expose_services = false\n",
    ));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    ws.apply();
    assert!(sim
        .find("c1", "Gateway", NS, "cross-network-gateway")
        .is_none());
    let ig = sim
        .find("c1", "Gateway", NS, "istiod-gateway")
        .expect("istiod-gateway");
    assert_eq!(ig["spec"]["servers"][0]["port"]["number"], 15012);
    assert_eq!(ig["spec"]["servers"][1]["port"]["number"], 15017);
    let vs = sim
        .find("c1", "VirtualService", NS, "istiod-vs")
        .expect("istiod-vs");
    assert_eq!(
        vs["spec"]["tls"][1]["route"][0]["destination"],
        json!({"host": "istiod.istio-system.svc.cluster.local", "port": {"number": 443}})
    );
    assert_eq!(resource_version(&sim, "Deployment", GW), dep_rv);
    assert_eq!(resource_version(&sim, "Service", GW), svc_rv);
    assert_eq!(ws.output("address"), json!(ip));
    ws.assert_empty_plan();

    // Back to both exposed, for the rest.
    let both = "  expose_istiod = true\n";
    ws.config(&config(&kc, both));
    ws.apply();
    assert!(sim
        .find("c1", "Gateway", NS, "cross-network-gateway")
        .is_some());
    ws.assert_empty_plan();

    // Drift: Deployment and a Gateway deleted, the Service's network label edited.
    sim.kubectl("c1", &["-n", NS, "delete", "deployment", GW]);
    sim.kubectl(
        "c1",
        &[
            "-n",
            NS,
            "delete",
            "gateways.networking.istio.io",
            "istiod-gateway",
        ],
    );
    sim.kubectl(
        "c1",
        &[
            "-n",
            NS,
            "label",
            "service",
            GW,
            "topology.istio.io/network=wrong",
            "--overwrite",
        ],
    );
    let out = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "drift not seen:\n{text}");
    let shows = |key: &str, change: &str| {
        text.lines()
            .any(|l| l.contains(&format!("\"{key}\"")) && l.contains(change))
    };
    assert!(
        shows(
            "Deployment/istio-eastwestgateway",
            r#""missing" -> "in-sync""#
        ) && shows("Gateway/istiod-gateway", r#""missing" -> "in-sync""#)
            && shows(
                "Service/istio-eastwestgateway",
                r#""modified" -> "in-sync""#
            ),
        "{text}"
    );
    ws.apply();
    assert!(sim.find("c1", "Deployment", NS, GW).is_some());
    assert!(sim.find("c1", "Gateway", NS, "istiod-gateway").is_some());
    assert_eq!(
        labels_of(&sim.find("c1", "Service", NS, GW).unwrap())["topology.istio.io/network"],
        "network1"
    );
    ws.assert_empty_plan();

    // The load balancer's address changes: refresh updates `address` for downstream users.
    sim.kubectl(
        "c1",
        &[
            "-n",
            NS,
            "patch",
            "service",
            GW,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.77"}]}}}"#,
        ],
    );
    ws.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    assert_eq!(ws.output("address"), json!("192.0.2.77"));
    ws.assert_empty_plan();

    // Destroy waits until the Service is gone (its load balancer released).
    sim.reset_requests("c1");
    let started = Instant::now();
    ws.destroy();
    let took = started.elapsed();
    let destroy = sim.counters("c1");
    println!(
        "destroy: {} API requests {:?}; took {took:?} (load balancer release takes {lb_delay:?})",
        destroy.total, destroy.counts
    );
    assert!(took >= lb_delay, "destroy did not wait for the Service");
    assert!(sim.find("c1", "Service", NS, GW).is_none());
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

#[test]
fn eastwest_gateway_address_timeout_then_resume() {
    if !enabled_on_one_client("eastwest_gateway_address_timeout_then_resume") {
        return;
    }
    let (ws, sim) = setup("eastwest-timeout");
    let kc = sim.kubeconfig.display().to_string();
    sim.settings("c1", json!({"loadbalancer": {"enabled": false}}));
    ws.config(&config(&kc, "  timeouts {\n    create = \"5s\"\n  }\n"));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No load balancer address")
            && err.contains("Service istio-system/istio-eastwestgateway")
            && err.contains("load-balancer controller"),
        "{err}"
    );
    // The objects are kept (the load balancer being provisioned is not given up).
    let waiting = sim.find("c1", "Service", NS, GW).expect("Service kept");
    assert!(sim.find("c1", "Deployment", NS, GW).is_some());

    // The cloud catches up; the next apply adopts the same objects and resumes waiting:
    // the Service is the one created before, not a replacement.
    sim.settings("c1", json!({"loadbalancer": {"enabled": true}}));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(!plan.contains("must be replaced"), "{plan}");
    ws.apply();
    let svc = sim.find("c1", "Service", NS, GW).unwrap();
    assert_eq!(
        svc["metadata"]["uid"], waiting["metadata"]["uid"],
        "the Service was recreated"
    );
    assert_eq!(ws.output("address"), json!(ingress_ip(&svc).unwrap()));
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

#[test]
fn eastwest_gateway_update_to_load_balancer_resumes_waiting() {
    if !enabled("eastwest_gateway_update_to_load_balancer_resumes_waiting") {
        return;
    }
    let (ws, sim) = setup("eastwest-update");
    let kc = sim.kubeconfig.display().to_string();
    let timeouts = "  timeouts {\n    update = \"3s\"\n  }\n";
    ws.config(&config(
        &kc,
        &format!("  service_type = \"ClusterIP\"\n{timeouts}"),
    ));
    ws.apply();
    assert_eq!(ws.output("address"), Value::Null);
    assert_eq!(
        sim.find("c1", "Service", NS, GW).unwrap()["spec"]["type"],
        "ClusterIP"
    );
    ws.assert_empty_plan();

    // To LoadBalancer while no load balancer comes: the update fails, the resource stays
    // (not tainted) and the next apply waits again, in place.
    sim.settings("c1", json!({"loadbalancer": {"enabled": false}}));
    ws.config(&config(&kc, timeouts));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    // Terraform wraps diagnostic text: compare with single spaces.
    let err = String::from_utf8_lossy(&out.stderr)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No load balancer address") && err.contains("waits for the address again"),
        "{err}"
    );
    assert_eq!(
        sim.find("c1", "Service", NS, GW).unwrap()["spec"]["type"],
        "LoadBalancer"
    );
    // The next apply updates in place and waits again; the address arrives while it waits.
    ws.config(&config(&kc, "  timeouts {\n    update = \"60s\"\n  }\n"));
    sim.reset_requests("c1");
    let child = ws
        .command(&["apply", "-auto-approve", "-no-color"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start terraform apply");
    let until = Instant::now() + Duration::from_secs(60);
    while sim.counters("c1").get("watch", "services") == 0 {
        assert!(
            Instant::now() < until,
            "the provider never watched the Service"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sim.settings("c1", json!({"loadbalancer": {"enabled": true}}));
    let out = child.wait_with_output().expect("terraform apply");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("0 added, 1 changed, 0 destroyed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc = sim.find("c1", "Service", NS, GW).unwrap();
    assert_eq!(ws.output("address"), json!(ingress_ip(&svc).unwrap()));
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// Deletes every object of ours with kubectl, as someone cleaning up by hand would.
fn delete_all_ours(sim: &Clusters) {
    for o in sim.ours("c1") {
        let (kind, name) = o.split_once('/').unwrap();
        let kind = match kind {
            "Gateway" => "gateways.networking.istio.io",
            "VirtualService" => "virtualservices.networking.istio.io",
            k => k,
        };
        sim.kubectl("c1", &["-n", NS, "delete", kind, name, "--wait=true"]);
    }
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// Every object deleted out of band: refresh finds the gateway gone, so the plan creates it
/// again; a destroy that skips the refresh finds nothing to delete and still succeeds.
#[test]
fn eastwest_gateway_deleted_out_of_band() {
    if !enabled_on_one_client("eastwest_gateway_deleted_out_of_band") {
        return;
    }
    let (ws, sim) = setup("eastwest-gone");
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&config(&kc, "  expose_istiod = true\n"));
    ws.apply();
    ws.assert_empty_plan();
    let mut ours = sim.ours("c1");
    ours.sort();
    assert_eq!(ours.len(), 8, "{ours:?}");
    delete_all_ours(&sim);

    let out = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "deletion not seen:\n{text}");
    assert!(
        text.contains("mesh_eastwest_gateway.gw will be created")
            && text.contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "{text}"
    );
    // Refresh-only: the resource leaves the state, the root CA stays.
    ws.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    assert_eq!(ws.state_list(), ["mesh_root_ca.root"]);

    // Back again, then everything gone once more and a destroy that does not refresh.
    ws.apply();
    assert_eq!(sim.ours("c1").len(), 8);
    delete_all_ours(&sim);
    sim.reset_requests("c1");
    let out = ws.ok(&["destroy", "-refresh=false", "-auto-approve", "-no-color"]);
    assert!(
        out.contains("Destroy complete! Resources: 2 destroyed."),
        "{out}"
    );
    assert!(
        sim.counters("c1").get("delete", "services") > 0,
        "destroy did not try to delete the Service"
    );
    assert_eq!(ws.state_list(), Vec::<String>::new());
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

#[test]
fn eastwest_gateway_bad_input_fails_at_plan() {
    if !enabled("eastwest_gateway_bad_input_fails_at_plan") {
        return;
    }
    let ws = Workspace::new("eastwest-invalid");
    ws.config(
        r#"
resource "mesh_eastwest_gateway" "bad" {
  network      = ""
  name         = "East_West"
  service_type = "Ingress"
  replicas     = 0
}
"#,
    );
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "Empty network",
        "Invalid name",
        "DNS-1035",
        "Invalid service_type",
        "Invalid replicas",
        "replicas     = 0",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }

    ws.config(
        r#"
resource "mesh_eastwest_gateway" "cluster_ip" {
  network       = "n1"
  service_type  = "ClusterIP"
  expose_istiod = true
}
"#,
    );
    let out = ws.run(&["plan", "-no-color"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("istiod exposed on a ClusterIP Service"),
        "{all}"
    );
}

/// An update that fails on one object leaves that object marked out of sync in state, so
/// even a plan without refresh applies it again.
#[test]
fn eastwest_gateway_failed_update_is_applied_again() {
    if !enabled("eastwest_gateway_failed_update_is_applied_again") {
        return;
    }
    let (ws, sim) = setup("eastwest-failed-update");
    let kc = sim.kubeconfig.display().to_string();
    let body = |replicas: u32| {
        format!(
            "  service_type = \"ClusterIP\"\n  wait_for_address = false\n  replicas = {replicas}\n"
        )
    };
    ws.config(&config(&kc, &body(1)));
    ws.apply();
    ws.assert_empty_plan();

    // The Deployment cannot be written (403, not retried); the other objects are unchanged.
    sim.add_fault(
        "c1",
        &kube_sim::Fault {
            path: "*/deployments/*".into(),
            verb: Some("patch".into()),
            status: Some(403),
            ..Default::default()
        },
    );
    ws.config(&config(&kc, &body(2)));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert!(!out.status.success(), "the update should have failed");
    sim.clear_faults("c1");

    let replan = ws.run(&["plan", "-refresh=false", "-detailed-exitcode", "-no-color"]);
    assert_eq!(
        replan.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&replan.stdout)
    );
    ws.apply();
    let deployment = sim
        .find("c1", "Deployment", NS, "istio-eastwestgateway")
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// A gateway in a namespace of its own with `expose_istiod`: the VirtualService routes to istiod
/// in `istiod_namespace`; without it, apply warns that the route leads to no Service.
#[test]
fn eastwest_gateway_outside_istiods_namespace_routes_to_istiod() {
    if !enabled_on_one_client("eastwest_gateway_outside_istiods_namespace_routes_to_istiod") {
        return;
    }
    let (ws, sim) = setup("eastwest-istiod-namespace");
    let kc = sim.kubeconfig.display().to_string();
    sim.kubectl("c1", &["create", "namespace", "istio-gateways"]);
    // istiod's Service, where the control plane runs.
    let istiod = ws.write_file(
        "istiod.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: istiod\n  namespace: istio-system\nspec:\n  ports:\n  - {name: https-dns, port: 15012}\n",
    );
    sim.kubectl("c1", &["apply", "-f", istiod.to_str().unwrap()]);
    let body = "  namespace        = \"istio-gateways\"\n  expose_istiod    = true\n  service_type     = \"NodePort\"\n";
    ws.config(&config(
        &kc,
        &format!("{body}  istiod_namespace = \"{NS}\"\n"),
    ));
    let out = ws.apply();
    assert!(!out.contains("does not exist"), "{out}");
    let host = |sim: &Clusters| {
        sim.find("c1", "VirtualService", "istio-gateways", "istiod-vs")
            .expect("istiod-vs in the gateway's namespace")["spec"]["tls"][0]["route"][0]
            ["destination"]["host"]
            .clone()
    };
    assert_eq!(host(&sim), "istiod.istio-system.svc.cluster.local");
    assert!(sim
        .find("c1", "Gateway", "istio-gateways", "istiod-gateway")
        .is_some());
    ws.assert_empty_plan();

    // Without istiod_namespace the route is the gateway's namespace, where istiod is not: the
    // apply says so, naming the attribute to set.
    ws.config(&config(&kc, body));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    let all = flat(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("expose_istiod routes to a Service that does not exist"),
        "{all}"
    );
    assert!(all.contains("set istiod_namespace"), "{all}");
    assert_eq!(host(&sim), "istiod.istio-gateways.svc.cluster.local");
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

fn flat(out: &std::process::Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

/// A gateway applied into a namespace that is being deleted: a 403 NamespaceTerminating from
/// the API server, reported as the namespace being deleted (never as missing RBAC), after
/// waiting for the deletion as long as the timeout allows.
#[test]
fn eastwest_gateway_in_a_terminating_namespace_says_it_is_being_deleted() {
    if !enabled_on_one_client(
        "eastwest_gateway_in_a_terminating_namespace_says_it_is_being_deleted",
    ) {
        return;
    }
    let (ws, sim) = setup("eastwest-terminating");
    let kc = sim.kubeconfig.display().to_string();
    let held = ws.write_file(
        "held.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gw-ns\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: gw-ns\n  finalizers: [\"example.com/hold\"]\n",
    );
    sim.kubectl("c1", &["apply", "-f", held.to_str().unwrap()]);
    sim.kubectl("c1", &["delete", "namespace", "gw-ns", "--wait=false"]);
    let body = "  namespace        = \"gw-ns\"\n  wait_for_address = false\n  timeouts {\n    create = \"3s\"\n  }\n";
    ws.config(&config(&kc, body));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    let all = flat(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("namespace gw-ns is still being deleted"),
        "{all}"
    );
    assert!(!all.contains("RBAC"), "{all}");
    assert!(
        sim.ours("c1").is_empty(),
        "nothing created in a namespace being deleted"
    );

    // Released and created anew: the next apply installs the gateway.
    sim.kubectl(
        "c1",
        &[
            "-n",
            "gw-ns",
            "patch",
            "configmap",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    sim.wait_until("c1", "gw-ns gone", Duration::from_secs(15), |objs| {
        !objs
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "gw-ns")
    });
    sim.kubectl("c1", &["create", "namespace", "gw-ns"]);
    ws.apply();
    assert!(sim.find("c1", "Deployment", "gw-ns", GW).is_some());
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

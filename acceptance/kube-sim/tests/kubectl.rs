//! kube-sim through a client nobody here wrote: kubectl. Skipped (with a note) when kubectl is
//! not installed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::sim;

struct Kubectl {
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Kubectl {
    fn available() -> bool {
        std::process::Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
        .expect("run kubectl")
    }

    /// Run and require success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run and require failure; returns stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(sim: &kube_sim::Sim, tag: &str) -> Kubectl {
    let dir = std::env::temp_dir().join(format!("kube-sim-kubectl-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(Path::new(&kubeconfig)).unwrap();
    Kubectl { kubeconfig, dir }
}

macro_rules! require_kubectl {
    () => {
        if !Kubectl::available() {
            eprintln!("NOTE: kubectl not found on PATH; skipping kubectl tests");
            return;
        }
    };
}

const CM: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
  namespace: default
data:
  owner: first
";

#[tokio::test]
async fn kubectl_get_create_apply_label_delete() {
    require_kubectl!();
    let sim = sim(&["c1", "c2"]).await;
    let k = setup(&sim, "crud");

    // get, both contexts and client-certificate auth.
    let ns = k.ok(&["get", "namespaces", "-o", "name"]).await;
    assert!(ns.contains("namespace/kube-system"), "{ns}");
    k.ok(&["--context", "c2-cert", "get", "nodes"]).await;
    let version = k.ok(&["version", "-o", "json"]).await;
    assert!(version.contains("kube-sim"), "{version}");

    // create, and AlreadyExists on the second try.
    let cm = k.file("cm.yaml", CM);
    k.ok(&["create", "-f", &cm]).await;
    let err = k.fails(&["create", "-f", &cm]).await;
    assert!(err.contains("AlreadyExists"), "{err}");

    // apply --server-side: two managers conflict; --force-conflicts takes over.
    k.ok(&["apply", "--server-side", "--field-manager=first", "-f", &cm])
        .await;
    let second = k.file("cm2.yaml", &CM.replace("owner: first", "owner: second"));
    let err = k
        .fails(&[
            "apply",
            "--server-side",
            "--field-manager=second",
            "-f",
            &second,
        ])
        .await;
    assert!(err.contains("conflict with \"first\""), "{err}");
    assert!(err.contains(".data.owner"), "{err}");
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=second",
        "--force-conflicts",
        "-f",
        &second,
    ])
    .await;
    let owner = k
        .ok(&["get", "configmap", "demo", "-o", "jsonpath={.data.owner}"])
        .await;
    assert_eq!(owner, "second");
    let managers = k
        .ok(&[
            "get",
            "configmap",
            "demo",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(managers.contains("second"), "{managers}");

    // label, then select by it.
    k.ok(&["label", "configmap", "demo", "tier=gold"]).await;
    let selected = k
        .ok(&["get", "configmaps", "-l", "tier=gold", "-o", "name"])
        .await;
    assert_eq!(selected.trim(), "configmap/demo");
    let err = k
        .fails(&["label", "configmap", "demo", "tier=silver"])
        .await;
    assert!(err.contains("already has a value"), "{err}");
    k.ok(&["label", "--overwrite", "configmap", "demo", "tier=silver"])
        .await;

    // Typed generator commands send protobuf bodies.
    k.ok(&["create", "namespace", "gen"]).await;
    k.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "gen",
        "--from-literal=k=v",
    ])
    .await;
    k.ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "gen",
        "--from-literal=pw=hunter2",
    ])
    .await;
    let pw = k
        .ok(&[
            "get",
            "secret",
            "pw",
            "-n",
            "gen",
            "-o",
            "jsonpath={.data.pw}",
        ])
        .await;
    assert_eq!(pw, "aHVudGVyMg==");
    k.ok(&["create", "serviceaccount", "bot", "-n", "gen"])
        .await;
    let token = k
        .ok(&["create", "token", "bot", "-n", "gen", "--duration=1h"])
        .await;
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    assert_eq!(
        k.ok(&["auth", "can-i", "delete", "pods"]).await.trim(),
        "yes"
    );
    let err = k
        .fails(&["create", "deployment", "web", "--image=nginx"])
        .await;
    assert!(
        err.contains("kube-sim decodes protobuf bodies only for"),
        "{err}"
    );

    // delete (kubectl waits for the object to go).
    k.ok(&["delete", "configmap", "demo"]).await;
    let err = k.fails(&["get", "configmap", "demo"]).await;
    assert!(err.contains("NotFound"), "{err}");

    // Server-side apply of a CRD, then of an Istio Gateway served by it.
    let crd = k.file(
        "crd.yaml",
        "apiVersion: apiextensions.k8s.io/v1
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
",
    );
    k.ok(&["apply", "--server-side", "-f", &crd]).await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gateways.networking.istio.io",
        "--timeout=20s",
    ])
    .await;
    let gw = k.file(
        "gw.yaml",
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cross-network-gateway
  namespace: default
spec:
  selector: {istio: eastwestgateway}
  servers:
  - port: {number: 15443, name: tls, protocol: TLS}
    tls: {mode: AUTO_PASSTHROUGH}
    hosts: ['*.local']
",
    );
    k.ok(&["apply", "--server-side", "-f", &gw]).await;
    let mode = k
        .ok(&[
            "get",
            "gateways.networking.istio.io",
            "cross-network-gateway",
            "-o",
            "jsonpath={.spec.servers[0].tls.mode}",
        ])
        .await;
    assert_eq!(mode, "AUTO_PASSTHROUGH");
}

#[tokio::test]
async fn kubectl_wait_for_controllers() {
    require_kubectl!();
    let sim = sim(&["c1"]).await;
    let k = setup(&sim, "wait");
    let manifests = k.file(
        "workloads.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: hello
  namespace: default
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: hello, image: busybox, args: [echo, hi]}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: doomed
  namespace: default
  annotations:
    kube-sim.mesh.dev/fail: disk full
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers: [{name: doomed, image: busybox}]
---
apiVersion: v1
kind: Service
metadata:
  name: eastwest
  namespace: default
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: tls, port: 15443}]
",
    );
    k.ok(&["apply", "--server-side", "-f", &manifests]).await;
    k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=20s",
    ])
    .await;
    k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"])
        .await;
    k.ok(&[
        "wait",
        "--for=condition=Complete",
        "job/hello",
        "--timeout=20s",
    ])
    .await;
    k.ok(&[
        "wait",
        "--for=condition=Failed",
        "job/doomed",
        "--timeout=20s",
    ])
    .await;
    let log = k.ok(&["logs", "job/doomed"]).await;
    assert!(log.contains("disk full"), "{log}");
    k.ok(&[
        "wait",
        "--for=jsonpath={.status.loadBalancer.ingress[0].ip}",
        "service/eastwest",
        "--timeout=20s",
    ])
    .await;

    // Namespace deletion removes its contents; kubectl waits for it.
    let ns = k.file(
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: scratch}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: scratch}\n",
    );
    k.ok(&["create", "-f", &ns]).await;
    k.ok(&[
        "delete",
        "namespace",
        "scratch",
        "--wait=true",
        "--timeout=20s",
    ])
    .await;
    let err = k.fails(&["get", "namespace", "scratch"]).await;
    assert!(err.contains("NotFound"), "{err}");

    // Delete a Job with its pods and wait for the pods to go.
    k.ok(&["delete", "job", "hello", "--cascade=background"])
        .await;
    k.ok(&[
        "wait",
        "--for=delete",
        "pod",
        "-l",
        "job-name=hello",
        "--timeout=20s",
    ])
    .await;
    let dump = sim.cluster("c1").control().dump().await.unwrap();
    assert!(!dump
        .iter()
        .any(|o| o["metadata"]["labels"]["job-name"] == "hello"));
}

//! What listens in a workload pod. Containers run nothing, except images kube-sim knows:
//!
//! * Istio's HelloWorld sample (`examples-helloworld-v1`/`-v2`, any image name containing
//!   `examples-helloworld`): gunicorn on port 5000 serving `samples/helloworld/src/app.py` —
//!   `GET /hello` → `Hello version: <SERVICE_VERSION>, instance: <HOSTNAME>\n` (the image sets
//!   `SERVICE_VERSION` from its build argument, `v1` by default; the container's env overrides
//!   it; `HOSTNAME` is the pod name), `GET /health` → `Helloworld is healthy`, anything else
//!   Flask's 404 page.
//!
//! Any other port of any other image refuses the connection.

use serde_json::Value;

pub const HELLOWORLD_PORT: u16 = 5000;

/// An HTTP answer of an application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

const FLASK_404: &str = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n";

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container
        .get("env")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")
        .and_then(Value::as_str)
}

/// The version a HelloWorld image reports without `SERVICE_VERSION` in the pod spec.
fn image_version(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split([':', '@']).next().unwrap_or(name);
    name.rsplit_once("examples-helloworld-")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "v1".to_string())
}

/// The answer to `GET path` on `port` of the pod, or `None` when nothing listens there.
pub fn answer(pod: &Value, port: u16, path: &str) -> Option<Reply> {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array)?;
    let hello = containers.iter().find(|c| {
        c.get("image")
            .and_then(Value::as_str)
            .is_some_and(|i| i.contains("examples-helloworld"))
    });
    let c = hello.filter(|_| port == HELLOWORLD_PORT)?;
    let path = path.split(['?', '#']).next().unwrap_or("/");
    Some(match path {
        "/hello" => {
            let version = env_value(c, "SERVICE_VERSION")
                .map(str::to_string)
                .unwrap_or_else(|| {
                    image_version(c.get("image").and_then(Value::as_str).unwrap_or(""))
                });
            let pod_name = crate::object::name(pod);
            Reply {
                status: 200,
                body: format!("Hello version: {version}, instance: {pod_name}\n"),
            }
        }
        "/health" => Reply {
            status: 200,
            body: "Helloworld is healthy".into(),
        },
        _ => Reply {
            status: 404,
            body: FLASK_404.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(image: &str, env: Value) -> Value {
        json!({"metadata": {"name": "helloworld-v2-abc"},
            "spec": {"containers": [{"name": "helloworld", "image": image, "env": env}]}})
    }

    #[test]
    fn helloworld_answers_like_the_sample() {
        let p = pod(
            "registry.istio.io/release/examples-helloworld-v2:1.0",
            json!([]),
        );
        assert_eq!(
            answer(&p, 5000, "/hello").unwrap().body,
            "Hello version: v2, instance: helloworld-v2-abc\n"
        );
        assert_eq!(answer(&p, 5000, "/health").unwrap().status, 200);
        assert_eq!(answer(&p, 5000, "/other").unwrap().status, 404);
        assert_eq!(answer(&p, 8080, "/hello"), None);
        let p = pod(
            "docker.io/istio/examples-helloworld-v1",
            json!([{"name": "SERVICE_VERSION", "value": "blue"}]),
        );
        assert_eq!(
            answer(&p, 5000, "/hello?x=1").unwrap().body,
            "Hello version: blue, instance: helloworld-v2-abc\n"
        );
        assert_eq!(
            answer(&pod("curlimages/curl", json!([])), 5000, "/hello"),
            None
        );
    }
}

//! How to reach a cluster: inline settings over a kubeconfig (file, context), the same meaning
//! as in the hashicorp/kubernetes and helm providers.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use kube::config::{
    AuthInfo, Cluster as KcCluster, Context, ExecConfig, KubeConfigOptions, Kubeconfig,
    NamedAuthInfo, NamedCluster, NamedContext,
};

use super::error::KubeError;

/// An exec credential plugin (e.g. `aws eks get-token`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Exec {
    pub api_version: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

/// Connection settings; every field optional. Debug output never shows secrets.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Connection {
    pub host: Option<String>,
    pub cluster_ca_certificate: Option<String>,
    pub token: Option<String>,
    pub client_certificate: Option<String>,
    pub client_key: Option<String>,
    pub insecure: Option<bool>,
    pub tls_server_name: Option<String>,
    pub proxy_url: Option<String>,
    pub config_path: Option<String>,
    pub config_context: Option<String>,
    pub exec: Option<Exec>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("token", &secret(&self.token))
            .field("client_key", &secret(&self.client_key))
            .field("config_path", &self.config_path)
            .field("config_context", &self.config_context)
            .field("exec", &self.exec.as_ref().map(|e| &e.command))
            .finish_non_exhaustive()
    }
}

/// The name the provider gives the merged context it connects with.
const MERGED: &str = "terraform-provider-mesh";

/// Where a connection that names no kubeconfig finds one: `KUBECONFIG` (a list of paths,
/// merged), else `$HOME/.kube/config`. A value rather than reads of the process environment,
/// so tests can point it elsewhere without mutating the environment of other threads.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub kubeconfig: Option<OsString>,
    pub home: Option<PathBuf>,
}

impl Env {
    /// This process's `KUBECONFIG` and `HOME`.
    pub fn process() -> Self {
        Env {
            kubeconfig: std::env::var_os("KUBECONFIG"),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// The kubeconfig `KUBECONFIG` names, its files merged as kubectl does; `None` when unset
    /// or empty.
    fn kubeconfig(&self) -> Result<Option<Arc<Kubeconfig>>, String> {
        let Some(value) = &self.kubeconfig else {
            return Ok(None);
        };
        let paths: Vec<PathBuf> = std::env::split_paths(value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if paths.is_empty() {
            return Ok(None);
        }
        if let [one] = paths.as_slice() {
            return read_kubeconfig(one)
                .map(Some)
                .map_err(|e| format!("{}: {e}", one.display()));
        }
        let mut merged = Kubeconfig::default();
        for p in &paths {
            let next = read_kubeconfig(p).map_err(|e| format!("{}: {e}", p.display()))?;
            merged = merged
                .merge(Kubeconfig::clone(&next))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(Some(Arc::new(merged)))
    }

    fn expand_home(&self, path: &str) -> PathBuf {
        match (path.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(h)) => h.join(rest),
            _ => PathBuf::from(path),
        }
    }
}

/// A kubeconfig file, parsed once per content: every resource of a plan names the same file,
/// often a large one (one context per cluster), and each of them resolves its connections
/// several times per operation. Keyed by path, size and modification time, so an edited file
/// is read again.
fn read_kubeconfig(path: &Path) -> Result<Arc<Kubeconfig>, kube::config::KubeconfigError> {
    type Stamp = (u64, Option<SystemTime>);
    type Parsed = HashMap<PathBuf, (Stamp, Arc<Kubeconfig>)>;
    static CACHE: OnceLock<Mutex<Parsed>> = OnceLock::new();
    let stamp = std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()));
    let cache = CACHE.get_or_init(Default::default);
    if let Some(stamp) = stamp {
        let map = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, kc)) = map.get(path) {
            if *at == stamp {
                return Ok(kc.clone());
            }
        }
    }
    let kc = Arc::new(Kubeconfig::read_from(path)?);
    if let Some(stamp) = stamp {
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf(), (stamp, kc.clone()));
    }
    Ok(kc)
}

/// A connection's effective settings and the name to use for it in messages.
pub struct Resolved {
    /// A single-context kubeconfig: the selected context's cluster and user, inline values
    /// laid over them.
    pub kubeconfig: Kubeconfig,
    /// What [`Connection::describe`] says, with the kubeconfig's current context named when
    /// the connection does not name one.
    pub name: String,
}

impl Connection {
    /// A short name for messages: the context, else the host, else "the current kubeconfig
    /// context" (use [`Resolved::name`] to have that context named). Never contains
    /// credentials.
    pub fn describe(&self) -> String {
        self.describe_with(None)
    }

    /// [`Connection::describe`], naming `current`, the kubeconfig's current context, when the
    /// connection selects it implicitly.
    pub fn describe_with(&self, current: Option<&str>) -> String {
        match (&self.config_context, &self.host, current) {
            (Some(c), _, _) => format!("context {c:?}"),
            (None, Some(h), _) => format!("host {h}"),
            (None, None, Some(c)) => format!("context {c:?}"),
            (None, None, None) => "the current kubeconfig context".to_string(),
        }
    }

    /// Whether any inline cluster or credential setting is given.
    fn has_inline_target(&self) -> bool {
        self.host.is_some()
    }

    /// Reads the kubeconfig this connection refers to, if any: `config_path`, or (when no
    /// inline host is given, or a context is named) `KUBECONFIG` / `~/.kube/config`.
    fn base_kubeconfig(&self, env: &Env) -> Result<Option<Arc<Kubeconfig>>, KubeError> {
        if let Some(path) = &self.config_path {
            let path = env.expand_home(path);
            return read_kubeconfig(&path).map(Some).map_err(|e| {
                KubeError::config(
                    self,
                    format!("cannot read kubeconfig {}: {e}", path.display()),
                )
            });
        }
        if self.has_inline_target() && self.config_context.is_none() {
            return Ok(None);
        }
        match env.kubeconfig() {
            Ok(Some(kc)) => return Ok(Some(kc)),
            Ok(None) => {}
            Err(e) => {
                return Err(KubeError::config(
                    self,
                    format!("cannot read $KUBECONFIG: {e}"),
                ))
            }
        }
        let default = env.home.as_ref().map(|h| h.join(".kube").join("config"));
        match default {
            Some(p) if p.exists() => read_kubeconfig(&p)
                .map(Some)
                .map_err(|e| KubeError::config(self, format!("cannot read kubeconfig {}: {e}", p.display()))),
            _ if self.has_inline_target() => Ok(None),
            _ => Err(KubeError::config(
                self,
                "no cluster connection: set `host` (and credentials) or `config_path`/`config_context` in the kubernetes block, or provide KUBECONFIG / ~/.kube/config".into(),
            )),
        }
    }

    /// The effective kubeconfig: the selected context's cluster and user, with inline values
    /// laid over them, as a single-context kubeconfig.
    pub fn resolve(&self) -> Result<Kubeconfig, KubeError> {
        self.resolve_named().map(|r| r.kubeconfig)
    }

    /// [`Connection::resolve`] with the connection's name for messages.
    pub fn resolve_named(&self) -> Result<Resolved, KubeError> {
        self.resolve_in(&Env::process())
    }

    /// [`Connection::resolve_named`] with `KUBECONFIG` and `HOME` taken from `env`.
    pub fn resolve_in(&self, env: &Env) -> Result<Resolved, KubeError> {
        let base = self.base_kubeconfig(env)?;
        let (mut cluster, mut user) = (KcCluster::default(), AuthInfo::default());
        let mut current = None;
        if let Some(kc) = &base {
            let name = self
                .config_context
                .clone()
                .or_else(|| kc.current_context.clone())
                .ok_or_else(|| {
                    KubeError::config(
                        self,
                        "the kubeconfig has no current context; set config_context".into(),
                    )
                })?;
            current = Some(name.clone());
            let ctx = kc
                .contexts
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.context.clone())
                .ok_or_else(|| {
                    let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
                    KubeError::config(
                        self,
                        format!(
                            "context {name:?} is not in the kubeconfig (it has: {})",
                            known.join(", ")
                        ),
                    )
                })?;
            if let Some(c) = kc
                .clusters
                .iter()
                .find(|c| c.name == ctx.cluster)
                .and_then(|c| c.cluster.clone())
            {
                cluster = c;
            }
            if let Some(u) = ctx
                .user
                .as_ref()
                .and_then(|u| kc.auth_infos.iter().find(|a| &a.name == u))
                .and_then(|a| a.auth_info.clone())
            {
                user = u;
            }
        }
        let name = self.describe_with(current.as_deref());
        self.overlay(&mut cluster, &mut user);
        if cluster.server.is_none() {
            return Err(KubeError::Config {
                cluster: name,
                message: "no API server address: set `host` or a kubeconfig context".into(),
            });
        }
        let kubeconfig = Kubeconfig {
            clusters: vec![NamedCluster {
                name: MERGED.into(),
                cluster: Some(cluster),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: MERGED.into(),
                auth_info: Some(user),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: MERGED.into(),
                context: Some(Context {
                    cluster: MERGED.into(),
                    user: Some(MERGED.into()),
                    ..Default::default()
                }),
                other: Default::default(),
            }],
            current_context: Some(MERGED.into()),
            ..Default::default()
        };
        Ok(Resolved { kubeconfig, name })
    }

    fn overlay(&self, cluster: &mut KcCluster, user: &mut AuthInfo) {
        use base64::Engine;
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
        if let Some(h) = &self.host {
            cluster.server = Some(h.clone());
        }
        if let Some(ca) = &self.cluster_ca_certificate {
            cluster.certificate_authority = None;
            cluster.certificate_authority_data = Some(b64(ca));
        }
        if let Some(i) = self.insecure {
            cluster.insecure_skip_tls_verify = Some(i);
        }
        if let Some(n) = &self.tls_server_name {
            cluster.tls_server_name = Some(n.clone());
        }
        if let Some(p) = &self.proxy_url {
            cluster.proxy_url = Some(p.clone());
        }
        // Inline credentials replace the kubeconfig user's credentials as a whole: mixing a
        // token from one source with a client certificate from another is never intended.
        let inline_creds =
            self.token.is_some() || self.client_certificate.is_some() || self.exec.is_some();
        if inline_creds {
            *user = AuthInfo::default();
        }
        if let Some(t) = &self.token {
            user.token = Some(t.clone().into());
        }
        if let Some(c) = &self.client_certificate {
            user.client_certificate_data = Some(b64(c));
        }
        if let Some(k) = &self.client_key {
            user.client_key_data = Some(b64(k).into());
        }
        if let Some(e) = &self.exec {
            user.exec = Some(ExecConfig {
                api_version: Some(e.api_version.clone()),
                command: Some(e.command.clone()),
                args: Some(e.args.clone()),
                env: Some(
                    e.env
                        .iter()
                        .map(|(k, v)| {
                            [
                                ("name".to_string(), k.clone()),
                                ("value".to_string(), v.clone()),
                            ]
                            .into()
                        })
                        .collect(),
                ),
                drop_env: None,
                install_hint: None,
                interactive_mode: Some(kube::config::ExecInteractiveMode::Never),
                provide_cluster_info: false,
                cluster: None,
                other: Default::default(),
            });
        }
    }

    /// A kube-rs client configuration for this connection; `name` (from [`Resolved`]) is the
    /// cluster in error messages.
    pub async fn config(
        &self,
        kubeconfig: Kubeconfig,
        name: &str,
    ) -> Result<kube::Config, KubeError> {
        let options = KubeConfigOptions {
            context: Some(MERGED.into()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| KubeError::Config {
                cluster: name.to_string(),
                message: format!("invalid connection settings: {e}"),
            })?;
        config.connect_timeout = Some(std::time::Duration::from_secs(10));
        config.default_retry = false; // retry::retry is the one retry policy, bounded by the Deadline
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: east
clusters:
- name: east
  cluster: {server: "https://east.example:6443", tls-server-name: east-api}
- name: west
  cluster: {server: "https://west.example:6443"}
users:
- name: east-admin
  user: {token: east-token}
- name: west-admin
  user: {token: west-token}
contexts:
- name: east
  context: {cluster: east, user: east-admin}
- name: west
  context: {cluster: west, user: west-admin}
"#;

    fn with_file() -> (Connection, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "mesh-kc-{}-{:?}.yaml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, KUBECONFIG).unwrap();
        (
            Connection {
                config_path: Some(path.display().to_string()),
                ..Default::default()
            },
            path,
        )
    }

    fn server(kc: &Kubeconfig) -> (&str, Option<String>, Option<String>) {
        let c = kc.clusters[0].cluster.as_ref().unwrap();
        let u = kc.auth_infos[0].auth_info.as_ref().unwrap();
        use secrecy::ExposeSecret;
        (
            c.server.as_deref().unwrap(),
            c.tls_server_name.clone(),
            u.token.as_ref().map(|t| t.expose_secret().to_string()),
        )
    }

    #[test]
    fn current_context_then_named_context_then_inline_override() {
        let (conn, path) = with_file();
        let kc = conn.resolve().unwrap();
        assert_eq!(
            server(&kc),
            (
                "https://east.example:6443",
                Some("east-api".into()),
                Some("east-token".into())
            )
        );

        let west = Connection {
            config_context: Some("west".into()),
            ..conn.clone()
        };
        assert_eq!(
            server(&west.resolve().unwrap()).0,
            "https://west.example:6443"
        );

        let overridden = Connection {
            host: Some("https://10.0.0.1".into()),
            token: Some("inline".into()),
            ..conn.clone()
        };
        let kc = overridden.resolve().unwrap();
        // The host and token are ours; the kubeconfig's tls-server-name stays.
        assert_eq!(
            server(&kc),
            (
                "https://10.0.0.1",
                Some("east-api".into()),
                Some("inline".into())
            )
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_context_lists_the_known_ones() {
        let (conn, path) = with_file();
        let err = Connection {
            config_context: Some("north".into()),
            ..conn
        }
        .resolve()
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("context \"north\" is not in the kubeconfig (it has: east, west)"),
            "{msg}"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn inline_only_needs_no_kubeconfig_and_debug_hides_secrets() {
        let conn = Connection {
            host: Some("https://127.0.0.1:1".into()),
            token: Some("s3cr3t".into()),
            client_key: Some("-----BEGIN PRIVATE KEY-----".into()),
            ..Default::default()
        };
        assert_eq!(server(&conn.resolve().unwrap()).0, "https://127.0.0.1:1");
        let dbg = format!("{conn:?}");
        assert!(
            !dbg.contains("s3cr3t") && !dbg.contains("PRIVATE KEY"),
            "{dbg}"
        );
    }

    /// A fresh directory for one test, removed on drop.
    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "mesh-kc-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NORTH: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: north
  cluster: {server: "https://north.example:6443"}
users:
- name: north-admin
  user: {token: north-token}
contexts:
- name: north
  context: {cluster: north, user: north-admin}
"#;

    #[test]
    fn kubeconfig_env_then_home_when_the_block_sets_nothing() {
        let dir = Dir::new("env");
        let (a, b) = (dir.0.join("a.yaml"), dir.0.join("b.yaml"));
        std::fs::write(&a, KUBECONFIG).unwrap();
        std::fs::write(&b, NORTH).unwrap();
        let list = std::env::join_paths([&a, &b]).unwrap();
        let env = Env {
            kubeconfig: Some(list),
            home: None,
        };
        let nothing = Connection::default();
        // KUBECONFIG's files are merged: the first file's current context, the second's contexts.
        let r = nothing.resolve_in(&env).unwrap();
        assert_eq!(server(&r.kubeconfig).0, "https://east.example:6443");
        assert_eq!(r.name, "context \"east\"");
        let north = Connection {
            config_context: Some("north".into()),
            ..Default::default()
        };
        let r = north.resolve_in(&env).unwrap();
        assert_eq!(
            server(&r.kubeconfig),
            (
                "https://north.example:6443",
                None,
                Some("north-token".into())
            )
        );

        // KUBECONFIG unset (or empty): ~/.kube/config, HOME from the environment.
        std::fs::create_dir_all(dir.0.join(".kube")).unwrap();
        std::fs::write(
            dir.0.join(".kube/config"),
            NORTH.replace("contexts:", "current-context: north\ncontexts:"),
        )
        .unwrap();
        for kubeconfig in [None, Some(OsString::new())] {
            let env = Env {
                kubeconfig,
                home: Some(dir.0.clone()),
            };
            let r = nothing.resolve_in(&env).unwrap();
            assert_eq!(server(&r.kubeconfig).0, "https://north.example:6443");
            assert_eq!(r.name, "context \"north\"");
        }

        // `~/` in config_path is the same HOME.
        let tilde = Connection {
            config_path: Some("~/a.yaml".into()),
            ..Default::default()
        };
        let env = Env {
            kubeconfig: None,
            home: Some(dir.0.clone()),
        };
        assert_eq!(
            server(&tilde.resolve_in(&env).unwrap().kubeconfig).0,
            "https://east.example:6443"
        );

        // A KUBECONFIG naming a missing file is an error that names it, not a silent fallback.
        let missing = dir.0.join("missing.yaml");
        let env = Env {
            kubeconfig: Some(missing.clone().into_os_string()),
            home: Some(dir.0.clone()),
        };
        let msg = nothing.resolve_in(&env).err().unwrap().to_string();
        assert!(msg.contains("cannot read $KUBECONFIG"), "{msg}");
        assert!(msg.contains(&missing.display().to_string()), "{msg}");

        // Nothing anywhere: say what to set.
        let msg = nothing
            .resolve_in(&Env::default())
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("no cluster connection"), "{msg}");
        assert!(msg.contains("KUBECONFIG"), "{msg}");
    }

    #[test]
    fn errors_name_the_current_context_when_none_is_set() {
        let dir = Dir::new("name");
        let path = dir.0.join("kubeconfig");
        // The current context's cluster has no server: an error after the context is known.
        std::fs::write(
            &path,
            r#"
apiVersion: v1
kind: Config
current-context: kind-east
clusters:
- name: kind-east
  cluster: {insecure-skip-tls-verify: true}
users:
- name: kind-east
  user: {token: t}
contexts:
- name: kind-east
  context: {cluster: kind-east, user: kind-east}
"#,
        )
        .unwrap();
        let conn = Connection {
            config_path: Some(path.display().to_string()),
            ..Default::default()
        };
        let msg = conn.resolve().err().unwrap().to_string();
        assert!(
            msg.starts_with("cluster context \"kind-east\": no API server address"),
            "{msg}"
        );

        // Resolved: the name, and so a 401 from that cluster, says which context.
        let fixed = std::fs::read_to_string(&path).unwrap().replace(
            "{insecure-skip-tls-verify: true}",
            "{server: \"https://127.0.0.1:6443\"}",
        );
        std::fs::write(&path, fixed).unwrap();
        let r = conn.resolve_named().unwrap();
        assert_eq!(r.name, "context \"kind-east\"");
        let unauthorized = kube::Error::Api(
            kube::core::Status::failure("Unauthorized", "Unauthorized")
                .with_code(401)
                .boxed(),
        );
        let err = KubeError::from_kube(
            &r.name,
            "applying ConfigMap x",
            &unauthorized,
            std::time::Duration::ZERO,
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("cluster context \"kind-east\": applying ConfigMap x failed"),
            "{msg}"
        );
        assert!(msg.contains("credentials"), "{msg}");

        // Named explicitly, or by host: those win; with neither and no kubeconfig, the generic text.
        assert_eq!(
            Connection {
                config_context: Some("west".into()),
                ..Default::default()
            }
            .describe_with(Some("east")),
            "context \"west\""
        );
        assert_eq!(
            Connection {
                host: Some("https://h:6443".into()),
                ..Default::default()
            }
            .describe_with(Some("east")),
            "host https://h:6443"
        );
        assert_eq!(
            Connection::default().describe(),
            "the current kubeconfig context"
        );
    }
}

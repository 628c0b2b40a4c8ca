//! Acceptance harness: drives the real `terraform` (or `tofu`) binary against the built
//! provider through `dev_overrides`, one scratch working directory per scenario.
//!
//! Scenarios run only with `TF_ACC=1` (as in terraform-plugin-testing); `make test` sets it and
//! provides `TF_ACC_TERRAFORM_PATH` and `MESH_PROVIDER_DIR`.

pub mod hcl;
pub mod sim;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The provider's source address, as users write it in `required_providers`.
pub const PROVIDER_SOURCE: &str = "registry.terraform.io/tfmesh/mesh";

/// True when acceptance tests should run; prints why a test is skipped otherwise.
pub fn enabled(test: &str) -> bool {
    let on = std::env::var("TF_ACC").is_ok_and(|v| !v.is_empty() && v != "0");
    if !on {
        eprintln!("skipping {test}: set TF_ACC=1 to run acceptance tests (make test does)");
    }
    on
}

/// True on the second acceptance run of `make test`, with the oldest supported client
/// (`MESH_ACC_SECOND_CLIENT=1`): there, scenarios whose outcome cannot depend on the client
/// (the cluster-side and fault-injection ones) are not run again.
pub fn second_client_run() -> bool {
    std::env::var("MESH_ACC_SECOND_CLIENT").is_ok_and(|v| v == "1")
}

/// [`enabled`], and not on the second client's run (see [`second_client_run`]): for scenarios
/// whose outcome cannot depend on the Terraform client.
pub fn enabled_on_one_client(test: &str) -> bool {
    if second_client_run() {
        eprintln!(
            "skipping {test} on the second client: its outcome does not depend on the client"
        );
        return false;
    }
    enabled(test)
}

/// The Terraform CLI to use: `TF_ACC_TERRAFORM_PATH`, else `terraform` or `tofu` on PATH.
pub fn terraform_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TF_ACC_TERRAFORM_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for name in ["terraform", "tofu"] {
        if let Some(dir) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .find(|d| d.join(name).is_file())
        {
            return dir.join(name);
        }
    }
    panic!("no terraform or tofu found: set TF_ACC_TERRAFORM_PATH or run `make test`");
}

/// The directory holding the built `terraform-provider-mesh`.
pub fn provider_dir() -> PathBuf {
    let dir = std::env::var_os("MESH_PROVIDER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("debug")
        });
    assert!(
        dir.join("terraform-provider-mesh").is_file(),
        "no provider binary in {}: run `make build` first",
        dir.display()
    );
    dir
}

/// A scratch Terraform working directory wired to the built provider.
pub struct Workspace {
    pub dir: PathBuf,
    terraform: PathBuf,
    cli_config: PathBuf,
    extra_env: Vec<(String, String)>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Workspace {
    /// A fresh directory for scenario `name`.
    pub fn new(name: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("mesh-acc-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create workspace");
        let cli_config = dir.join("dev.tfrc");
        std::fs::write(
            &cli_config,
            format!(
                "provider_installation {{\n  dev_overrides {{\n    \"{PROVIDER_SOURCE}\" = \"{}\"\n  }}\n  direct {{}}\n}}\n",
                provider_dir().display()
            ),
        )
        .expect("write CLI config");
        Self {
            dir,
            terraform: terraform_binary(),
            cli_config,
            extra_env: Vec::new(),
        }
    }

    /// Drops the `dev_overrides` of this workspace's CLI configuration: Terraform then finds
    /// the provider the way users' Terraform does, through `terraform init` from its default
    /// sources (the implied local mirror under `$HOME/.terraform.d/plugins`).
    pub fn without_dev_overrides(self) -> Self {
        std::fs::write(&self.cli_config, "").expect("write CLI config");
        self
    }

    /// Sets an environment variable for every Terraform command of this workspace.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Writes `main.tf`: the `required_providers` block followed by `body`.
    pub fn config(&self, body: &str) {
        let text = format!(
            "terraform {{\n  required_providers {{\n    mesh = {{\n      source = \"{PROVIDER_SOURCE}\"\n    }}\n  }}\n}}\n\n{body}\n"
        );
        std::fs::write(self.dir.join("main.tf"), text).expect("write main.tf");
    }

    /// Copies a root module from `examples/<name>` (with its sub-modules) into the workspace.
    pub fn copy_example(&self, name: &str) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("examples")
            .join(name);
        copy_dir(&src, &self.dir);
        // Local modules must be "installed"; `get` does that without touching providers.
        self.ok(&["get", "-no-color"]);
    }

    /// A `terraform` command in this workspace with the test environment set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.terraform);
        cmd.args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `terraform <args>` and returns its output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run terraform")
    }

    /// Runs `terraform <args>` and panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "terraform {} failed ({}):\n{stdout}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The Terraform release this workspace runs, e.g. `(1, 0, 3)`.
    pub fn terraform_version(&self) -> (u32, u32, u32) {
        let out = self.ok(&["version", "-json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("version -json");
        let text = v["terraform_version"].as_str().expect("terraform_version");
        let mut parts = text.split(['.', '-']).map(|p| p.parse().unwrap_or(0));
        (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    }

    pub fn apply(&self) -> String {
        self.ok(&["apply", "-auto-approve", "-no-color"])
    }

    pub fn destroy(&self) -> String {
        self.ok(&["destroy", "-auto-approve", "-no-color"])
    }

    /// `terraform plan -detailed-exitcode`: 0 = no changes, 2 = changes (1 = error, which panics).
    pub fn plan_exit_code(&self) -> i32 {
        let out = self.run(&["plan", "-detailed-exitcode", "-no-color"]);
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == 2,
            "terraform plan failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        code
    }

    /// Asserts the plan is empty, printing it when it is not.
    pub fn assert_empty_plan(&self) {
        let out = self.run(&["plan", "-detailed-exitcode", "-no-color"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "after apply the plan was not empty:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `terraform output -json`, parsed.
    pub fn outputs(&self) -> serde_json::Value {
        let raw = self.ok(&["output", "-json"]);
        serde_json::from_str(&raw).expect("output -json is JSON")
    }

    /// One output's value (sensitive ones included).
    pub fn output(&self, name: &str) -> serde_json::Value {
        self.outputs()[name]["value"].clone()
    }

    /// Resource addresses in state.
    pub fn state_list(&self) -> Vec<String> {
        let out = self.run(&["state", "list"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Starts `terraform <args>` in the background, in a process group of its own (so a
    /// signal can reach Terraform and its providers as a terminal's Ctrl-C does). Output goes
    /// to files in the workspace, so nothing blocks on a full pipe.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let stdout = self.dir.join(format!("bg-{n}.stdout"));
        let stderr = self.dir.join(format!("bg-{n}.stderr"));
        let mut cmd = self.command(args);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("start terraform");
        Background {
            child,
            stdout,
            stderr,
            what: args.join(" "),
        }
    }

    /// Writes a file into the workspace (for openssl checks and the like).
    pub fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, content).expect("write file");
        p
    }
}

/// A Terraform command running in the background (see [`Workspace::spawn`]).
pub struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    what: String,
}

/// How a background command ended: its status and everything it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Both streams, for assertion messages.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl Background {
    /// Terraform's process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it has printed to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The process ids of the provider plugins Terraform runs now: its descendants running
    /// `terraform-provider-mesh` (Terraform 1.0 runs under panicwrap, so the provider is a
    /// grandchild there), read from /proc.
    pub fn providers(&self) -> Vec<i32> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        // (pid, parent pid) of every process.
        let table: Vec<(i32, i32)> = procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
                let ppid = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((pid, ppid))
            })
            .collect();
        let mut family = vec![i32::try_from(self.pid()).expect("pid fits")];
        let mut i = 0;
        while i < family.len() {
            let parent = family[i];
            family.extend(
                table
                    .iter()
                    .filter(|(_, pp)| *pp == parent)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        family
            .into_iter()
            .skip(1)
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("terraform-provider-mesh"))
            })
            .collect()
    }

    /// SIGKILLs the provider plugin (as an OOM kill or a lost machine would end it), waiting
    /// (bounded) for Terraform to have started it. Returns its process id.
    pub fn kill_provider(&self) -> i32 {
        let until = Instant::now() + Duration::from_secs(30);
        let pids = loop {
            let pids = self.providers();
            if !pids.is_empty() {
                break pids;
            }
            assert!(
                Instant::now() < until,
                "terraform {} never started the provider",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(pids.len(), 1, "one provider process expected: {pids:?}");
        // SAFETY: kill(2) on one process id we just found as Terraform's child.
        assert_eq!(unsafe { libc::kill(pids[0], libc::SIGKILL) }, 0);
        pids[0]
    }

    /// SIGINT to Terraform's whole process group, as Ctrl-C in a terminal sends it.
    pub fn interrupt(&self) {
        let pgid = i32::try_from(self.pid()).expect("pid fits");
        // SAFETY: kill(2) with a negative pid signals exactly that process group.
        assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    }

    /// Waits (bounded by `timeout`) for the command to end; kills its process group and
    /// panics if it does not.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let until = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for terraform") {
                break status;
            }
            if Instant::now() >= until {
                let pgid = i32::try_from(self.pid()).expect("pid fits");
                // SAFETY: our own process group, which did not end in time.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
                let _ = self.child.wait();
                panic!(
                    "terraform {} still running after {timeout:?}:\n{}",
                    self.what,
                    self.stdout_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Finished {
            status,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // A test that panicked mid-way leaves no Terraform running.
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pgid) = i32::try_from(self.child.id()) {
                // SAFETY: our own process group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // Keep the directory of a failed scenario (and on request) for inspection.
        if !std::thread::panicking() && std::env::var_os("MESH_ACC_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create directory");
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()))
    {
        let entry = entry.expect("directory entry");
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let to = dst.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy file");
        }
    }
}

/// Runs `openssl <args>` and returns stdout; panics with stderr on failure.
pub fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

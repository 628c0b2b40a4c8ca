//! The programs `pods/exec` can run. Containers run no real processes, so a command runs one
//! of these simulations, chosen by the basename of `argv[0]` (any directory: `/bin/sleep` is
//! `sleep`); every container has all of them. A name that is none of them is what the
//! container runtime reports for a missing binary ([`Exit::NotFound`]).
//!
//! The shell is busybox `sh` reduced to `sh -c '<one simple command>'` (and the same command
//! read from stdin), because that is how scripts usually wrap one command.

pub mod curl;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;

/// Where a program runs (every container of a pod shares its network namespace, so the
/// container does not matter to the simulated programs).
pub struct Context {
    pub cluster: Arc<Cluster>,
    pub pod: Arc<Value>,
}

/// How a program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(u8),
    /// The runtime could not start `argv[0]` (no such executable).
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Exit,
}

impl Output {
    pub fn code(code: u8) -> Output {
        Output {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit: Exit::Code(code),
        }
    }

    pub fn out(code: u8, stdout: impl Into<Vec<u8>>) -> Output {
        Output {
            stdout: stdout.into(),
            ..Output::code(code)
        }
    }

    pub fn err(code: u8, stderr: impl Into<Vec<u8>>) -> Output {
        Output {
            stderr: stderr.into(),
            ..Output::code(code)
        }
    }
}

/// Longest `sleep` simulated (a longer one is refused rather than holding a test).
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// The simulated programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    True,
    False,
    Echo,
    Sleep,
    Cat,
    Sh,
    Curl,
}

impl Program {
    pub fn lookup(argv0: &str) -> Option<Program> {
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        Some(match base {
            "true" => Program::True,
            "false" => Program::False,
            "echo" => Program::Echo,
            "sleep" => Program::Sleep,
            "cat" => Program::Cat,
            "sh" | "ash" | "bash" => Program::Sh,
            "curl" => Program::Curl,
            _ => return None,
        })
    }

    /// Whether the program reads stdin (so the session must collect it first).
    fn reads_stdin(self, args: &[String]) -> bool {
        match self {
            Program::Cat => args.is_empty() || args.iter().any(|a| a == "-"),
            Program::Sh => match sh_script(args) {
                Some(script) => reads_stdin(&split_words(script).unwrap_or_default()),
                None => true,
            },
            _ => false,
        }
    }

    async fn run(self, ctx: &Context, args: &[String], stdin: &[u8]) -> Output {
        match self {
            Program::True => Output::code(0),
            Program::False => Output::code(1),
            Program::Echo => echo(args),
            Program::Sleep => sleep(args).await,
            Program::Cat => cat(args, stdin),
            Program::Sh => Box::pin(sh(ctx, args, stdin)).await,
            Program::Curl => curl::run(ctx, args),
        }
    }
}

/// Whether running `argv` reads stdin.
pub fn reads_stdin(argv: &[String]) -> bool {
    match argv.split_first() {
        Some((p, args)) => Program::lookup(p).is_some_and(|p| p.reads_stdin(args)),
        None => false,
    }
}

/// Run `argv` in the container.
pub async fn run(ctx: &Context, argv: &[String], stdin: &[u8]) -> Output {
    match argv.split_first() {
        Some((p, args)) => match Program::lookup(p) {
            Some(prog) => prog.run(ctx, args, stdin).await,
            None => Output {
                stdout: Vec::new(),
                stderr: Vec::new(),
                exit: Exit::NotFound,
            },
        },
        None => Output {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit: Exit::NotFound,
        },
    }
}

/// busybox `echo [-n] args...`.
fn echo(args: &[String]) -> Output {
    let (newline, words) = match args.first().map(String::as_str) {
        Some("-n") => (false, &args[1..]),
        _ => (true, args),
    };
    let mut s = words.join(" ");
    if newline {
        s.push('\n');
    }
    Output::out(0, s)
}

/// A duration as busybox `sleep` reads it: seconds with an optional fraction and an optional
/// `s`/`m`/`h`/`d` suffix.
pub fn parse_sleep(arg: &str) -> Option<Duration> {
    let (num, mult) = match arg.char_indices().last()? {
        (i, 's') => (&arg[..i], 1.0),
        (i, 'm') => (&arg[..i], 60.0),
        (i, 'h') => (&arg[..i], 3600.0),
        (i, 'd') => (&arg[..i], 86400.0),
        _ => (arg, 1.0),
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let secs: f64 = num.parse().ok()?;
    Some(Duration::from_secs_f64(secs * mult))
}

async fn sleep(args: &[String]) -> Output {
    let Some(arg) = args.first() else {
        return Output::err(
            1,
            "BusyBox v1.37.0 multi-call binary.\n\nUsage: sleep [N]...\n",
        );
    };
    let mut total = Duration::ZERO;
    for a in args {
        match parse_sleep(a) {
            Some(d) => total += d,
            None => return Output::err(1, format!("sleep: invalid number '{a}'\n")),
        }
    }
    if total > MAX_SLEEP {
        // Not busybox: a simulated sleep that long would only hold the caller.
        return Output::err(
            1,
            format!(
                "kube-sim: sleep {arg}: sleeps longer than {}s are not simulated\n",
                MAX_SLEEP.as_secs()
            ),
        );
    }
    tokio::time::sleep(total).await;
    Output::code(0)
}

/// busybox `cat`: stdin (no arguments or `-`); there are no files in the container.
fn cat(args: &[String], stdin: &[u8]) -> Output {
    if args.is_empty() {
        return Output::out(0, stdin.to_vec());
    }
    let mut out = Output::code(0);
    for a in args {
        if a == "-" {
            out.stdout.extend_from_slice(stdin);
        } else {
            out.stderr.extend_from_slice(
                format!("cat: can't open '{a}': No such file or directory\n").as_bytes(),
            );
            out.exit = Exit::Code(1);
        }
    }
    out
}

/// The script of `sh -c <script>`; `None` when the shell reads its script from stdin.
fn sh_script(args: &[String]) -> Option<&str> {
    match args {
        [c, script, ..] if c == "-c" => Some(script.as_str()),
        _ => None,
    }
}

/// Split a simple command into words (whitespace; single and double quotes; backslash
/// escapes). `None` for an unterminated quote.
pub fn split_words(script: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = script.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// busybox `sh -c '<command>'` for one simple command (no pipes, lists or expansions).
async fn sh(ctx: &Context, args: &[String], stdin: &[u8]) -> Output {
    let script = match sh_script(args) {
        Some(s) => s.to_string(),
        None if args.is_empty() => String::from_utf8_lossy(stdin).into_owned(),
        None => {
            return Output::err(
                2,
                format!("sh: can't open '{}': No such file or directory\n", args[0]),
            )
        }
    };
    if script.contains(['|', ';', '&', '>', '<', '$', '`', '\n']) && script.trim() != "" {
        return Output::err(
            2,
            "kube-sim: the simulated sh runs one simple command (no pipes, lists, redirections or expansions)\n",
        );
    }
    let Some(words) = split_words(&script) else {
        return Output::err(2, "sh: syntax error: unterminated quoted string\n");
    };
    let Some((name, rest)) = words.split_first() else {
        return Output::code(0);
    };
    if name == "exit" {
        return match rest.first().map(|s| s.parse::<u32>()) {
            None => Output::code(0),
            Some(Ok(n)) => Output::code((n % 256) as u8),
            Some(Err(_)) => Output::err(2, format!("sh: exit: Illegal number: {}\n", rest[0])),
        };
    }
    match Program::lookup(name) {
        Some(p) => p.run(ctx, rest, stdin).await,
        None => Output::err(127, format!("sh: {name}: not found\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn programs_are_found_by_basename() {
        assert_eq!(Program::lookup("/usr/bin/curl"), Some(Program::Curl));
        assert_eq!(Program::lookup("true"), Some(Program::True));
        assert_eq!(Program::lookup("wget"), None);
        assert!(reads_stdin(&words(&["cat"])));
        assert!(!reads_stdin(&words(&["cat", "/etc/hosts"])));
        assert!(reads_stdin(&words(&["sh", "-c", "cat"])));
        assert!(!reads_stdin(&words(&["echo", "x"])));
    }

    #[test]
    fn simple_programs_answer_like_busybox() {
        assert_eq!(echo(&words(&["a", "b"])), Output::out(0, "a b\n"));
        assert_eq!(echo(&words(&["-n", "a"])), Output::out(0, "a"));
        assert_eq!(cat(&[], b"in"), Output::out(0, "in"));
        let c = cat(&words(&["/x"]), b"");
        assert_eq!(c.exit, Exit::Code(1));
        assert_eq!(
            c.stderr,
            b"cat: can't open '/x': No such file or directory\n"
        );
        assert_eq!(parse_sleep("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_sleep("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_sleep("x"), None);
        assert_eq!(parse_sleep("infinity"), None);
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split_words("curl -s 'a b' \"c\\\"d\" e\\ f").unwrap(),
            words(&["curl", "-s", "a b", "c\"d", "e f"])
        );
        assert_eq!(split_words("'open"), None);
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }
}

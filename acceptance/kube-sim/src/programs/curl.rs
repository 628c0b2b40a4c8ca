//! `curl` (8.x) in a pod, for plain `GET`s of in-cluster services; where the request goes is
//! the data-plane model's decision ([`crate::dataplane`]).
//!
//! Accepted: `-s/--silent`, `-S/--show-error`, `-f/--fail`, `-L/--location`, `-k/--insecure`,
//! `-v/--verbose` (no trace), `-m/--max-time N`, `--connect-timeout N` (nothing takes time in
//! the simulation), `-o/--output FILE` (the body is discarded), `-w/--write-out FMT`
//! (`%{http_code}`, `%{response_code}`, `%{exitcode}`, `\n`), `-H/--header`, `-X GET`, short
//! flags combined (`-sS`, `-fsS`, `-m5`), one URL `[http://]host[:port][/path]`. Exit codes and
//! messages as curl's: 6 `Could not resolve host`, 7 `Failed to connect`, 22 with `-f` on a
//! status of 400 or more, 2 for a usage error, 35 for `https://` to a plaintext server.

use super::{Context, Output};
use crate::dataplane::{self, Outcome};

#[derive(Debug, Default, PartialEq)]
pub struct Opts {
    pub silent: bool,
    pub show_error: bool,
    pub fail: bool,
    pub discard_body: bool,
    pub write_out: Option<String>,
    pub url: Option<String>,
}

const TRY_HELP: &str = "curl: try 'curl --help' or 'curl --manual' for more information\n";

fn usage(msg: String) -> Output {
    Output::err(2, format!("curl: {msg}\n{TRY_HELP}"))
}

fn numeric(opt: &str, v: &str) -> Result<(), Output> {
    v.parse::<f64>().map(|_| ()).map_err(|_| {
        usage(format!(
            "option {opt}: expected a proper numerical parameter"
        ))
    })
}

/// Parse curl's command line.
pub fn parse(args: &[String]) -> Result<Opts, Output> {
    let mut o = Opts::default();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let mut take = |opt: &str, inline: Option<String>| -> Result<String, Output> {
            match inline {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("option {opt}: requires parameter"))),
            }
        };
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let opt = format!("--{name}");
            match name {
                "silent" => o.silent = true,
                "show-error" => o.show_error = true,
                "fail" => o.fail = true,
                "location" | "insecure" | "verbose" => {}
                "max-time" | "connect-timeout" => numeric(&opt, &take(&opt, inline)?)?,
                "output" => o.discard_body = !take(&opt, inline)?.is_empty(),
                "write-out" => o.write_out = Some(take(&opt, inline)?),
                "header" | "request" => {
                    take(&opt, inline)?;
                }
                "url" => o.url = Some(take(&opt, inline)?),
                _ => return Err(usage(format!("option {opt}: is unknown"))),
            }
        } else if a.len() > 1 && a.starts_with('-') {
            let flags: Vec<char> = a[1..].chars().collect();
            let mut i = 0;
            while i < flags.len() {
                let f = flags[i];
                let rest: String = flags[i + 1..].iter().collect();
                let inline = (!rest.is_empty()).then_some(rest);
                let opt = format!("-{f}");
                match f {
                    's' => o.silent = true,
                    'S' => o.show_error = true,
                    'f' => o.fail = true,
                    'L' | 'k' | 'v' => {}
                    'm' | 'o' | 'w' | 'H' | 'X' => {
                        let v = take(&opt, inline)?;
                        match f {
                            'm' => numeric(&opt, &v)?,
                            'o' => o.discard_body = true,
                            'w' => o.write_out = Some(v),
                            _ => {}
                        }
                        break;
                    }
                    _ => return Err(usage(format!("option {opt}: is unknown"))),
                }
                i += 1;
            }
        } else if o.url.is_none() {
            o.url = Some(a.clone());
        }
    }
    Ok(o)
}

/// `[scheme://]host[:port][/path]` → (https, host, port, path).
pub fn split_url(url: &str) -> Result<(bool, String, u16, String), Output> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), url),
    };
    let https = match scheme.as_str() {
        "http" => false,
        "https" => true,
        other => {
            return Err(Output::err(
                1,
                format!("curl: (1) Protocol \"{other}\" not supported\n"),
            ))
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => {
                return Err(Output::err(
                    3,
                    "curl: (3) URL rejected: Port number was not a decimal number between 0 and 65535\n",
                ))
            }
        },
        None => (authority, if https { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(Output::err(
            3,
            "curl: (3) URL rejected: No host part in the URL\n",
        ));
    }
    Ok((https, host.to_string(), port, path))
}

/// curl's output for an outcome.
pub fn render(o: &Opts, https: bool, host: &str, port: u16, outcome: &Outcome) -> Output {
    let (code, mut out, err): (u8, Vec<u8>, Option<String>) = match outcome {
        Outcome::Unresolved => (6, Vec::new(), Some(format!("(6) Could not resolve host: {host}"))),
        Outcome::Refused => (
            7,
            Vec::new(),
            Some(format!(
                "(7) Failed to connect to {host} port {port} after 0 ms: Could not connect to server"
            )),
        ),
        Outcome::Http(_) if https => (
            35,
            Vec::new(),
            Some("(35) TLS connect error: error:0A00010B:SSL routines::wrong version number".into()),
        ),
        Outcome::Http(r) if o.fail && r.status >= 400 => (
            22,
            Vec::new(),
            Some(format!("(22) The requested URL returned error: {}", r.status)),
        ),
        Outcome::Http(r) => (
            0,
            if o.discard_body { Vec::new() } else { r.body.clone().into_bytes() },
            None,
        ),
    };
    let status = match outcome {
        Outcome::Http(r) if !https => r.status,
        _ => 0,
    };
    if let Some(fmt) = &o.write_out {
        let s = fmt
            .replace("%{http_code}", &format!("{status:03}"))
            .replace("%{response_code}", &format!("{status:03}"))
            .replace("%{exitcode}", &code.to_string())
            .replace("\\n", "\n");
        out.extend_from_slice(s.as_bytes());
    }
    let mut stderr = String::new();
    if !o.silent {
        // The progress meter curl writes when stdout is not a terminal.
        let n = match outcome {
            Outcome::Http(r) if !https => r.body.len(),
            _ => 0,
        };
        stderr.push_str(
            "  % Total    % Received % Xferd  Average Speed   Time    Time     Time  Current\n",
        );
        stderr.push_str(
            "                                 Dload  Upload   Total   Spent    Left  Speed\n",
        );
        stderr.push_str(&format!(
            "\r100 {n:>5}  100 {n:>5}    0     0      0      0 --:--:-- --:--:-- --:--:--     0\n"
        ));
    }
    if let Some(e) = err {
        if !o.silent || o.show_error {
            stderr.push_str(&format!("curl: {e}\n"));
        }
    }
    Output {
        stdout: out,
        stderr: stderr.into_bytes(),
        exit: super::Exit::Code(code),
    }
}

pub fn run(ctx: &Context, args: &[String]) -> Output {
    let opts = match parse(args) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let Some(url) = opts.url.clone() else {
        return usage("no URL specified".into());
    };
    let (https, host, port, path) = match split_url(&url) {
        Ok(x) => x,
        Err(e) => return e,
    };
    let outcome = dataplane::http_get(&ctx.cluster, &ctx.pod, &host, port, &path);
    render(&opts, https, &host, port, &outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::apps::Reply;
    use crate::programs::Exit;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_like_curl() {
        let o = parse(&args(&[
            "-sS",
            "-m",
            "5",
            "--connect-timeout",
            "2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "helloworld.sample:5000/hello",
        ]))
        .unwrap();
        assert!(o.silent && o.show_error && o.discard_body && !o.fail);
        assert_eq!(o.url.as_deref(), Some("helloworld.sample:5000/hello"));
        assert_eq!(o.write_out.as_deref(), Some("%{http_code}"));
        let o = parse(&args(&["-fsSm5", "--max-time=3", "http://x"])).unwrap();
        assert!(o.fail && o.silent);
        let e = parse(&args(&["--bogus", "x"])).unwrap_err();
        assert_eq!(
            (e.exit, String::from_utf8(e.stderr).unwrap()),
            (
                Exit::Code(2),
                format!("curl: option --bogus: is unknown\n{TRY_HELP}")
            )
        );
        assert_eq!(
            parse(&args(&["-m", "soon", "x"])).unwrap_err().exit,
            Exit::Code(2)
        );
    }

    #[test]
    fn urls_split_with_curl_defaults() {
        assert_eq!(
            split_url("helloworld.sample:5000/hello").unwrap(),
            (false, "helloworld.sample".into(), 5000, "/hello".into())
        );
        assert_eq!(
            split_url("http://a.b.svc.cluster.local").unwrap(),
            (false, "a.b.svc.cluster.local".into(), 80, "/".into())
        );
        assert_eq!(split_url("https://a").unwrap().2, 443);
        assert_eq!(split_url("ftp://a").unwrap_err().exit, Exit::Code(1));
    }

    #[test]
    fn outcomes_render_as_curl_prints_them() {
        let silent = Opts {
            silent: true,
            ..Default::default()
        };
        let show = Opts {
            silent: true,
            show_error: true,
            ..Default::default()
        };
        let o = render(&show, false, "nope.sample", 5000, &Outcome::Unresolved);
        assert_eq!(
            (o.exit, String::from_utf8(o.stderr).unwrap()),
            (
                Exit::Code(6),
                "curl: (6) Could not resolve host: nope.sample\n".to_string()
            )
        );
        let o = render(&silent, false, "h", 5000, &Outcome::Refused);
        assert_eq!((o.exit, o.stderr.len()), (Exit::Code(7), 0));
        let hello = Outcome::Http(Reply {
            status: 200,
            body: "Hello version: v1, instance: p\n".into(),
        });
        let o = render(&silent, false, "h", 5000, &hello);
        assert_eq!(
            (o.exit, o.stdout),
            (Exit::Code(0), b"Hello version: v1, instance: p\n".to_vec())
        );
        let busy = Outcome::Http(Reply {
            status: 503,
            body: "no healthy upstream".into(),
        });
        let o = render(&silent, false, "h", 5000, &busy);
        assert_eq!(
            (o.exit, o.stdout),
            (Exit::Code(0), b"no healthy upstream".to_vec())
        );
        let fail = Opts {
            fail: true,
            show_error: true,
            silent: true,
            write_out: Some("%{http_code}\\n".into()),
            ..Default::default()
        };
        let o = render(&fail, false, "h", 5000, &busy);
        assert_eq!(o.exit, Exit::Code(22));
        assert_eq!(o.stdout, b"503\n");
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            "curl: (22) The requested URL returned error: 503\n"
        );
    }
}

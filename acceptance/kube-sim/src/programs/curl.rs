//! `curl` in a pod (filled in with the data-plane model).

use super::{Context, Output};

pub fn run(_ctx: &Context, _args: &[String]) -> Output {
    Output::err(2, "curl: not simulated yet\n")
}

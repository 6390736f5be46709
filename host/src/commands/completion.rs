//! `donut-host completion bash|zsh|fish`: a shell completion script on
//! stdout (clap_complete), e.g.
//! `donut-host completion bash > ~/.local/share/bash-completion/completions/donut-host`.

use anyhow::Result;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn run(mut command: clap::Command, args: Args) -> Result<i32> {
    let name = command.get_name().to_string();
    clap_complete::generate(args.shell, &mut command, name, &mut std::io::stdout());
    Ok(0)
}

//! `flotilla exec [-i] [-t] POD [-c CONTAINER] -- COMMAND [ARGS…]`: runs a command in a
//! pod through the API server's `pods/exec` (a WebSocket with kube's channel protocol,
//! as kubectl uses it), copying this process's stdio to it and exiting with its code.
//! With `-t` the local terminal is put in raw mode: the pod's side edits lines and
//! echoes, as a remote pty does.

use anyhow::Context as _;
use flotilla_client::streaming::{self, ExecExit, ExecOptions};
use tokio::io::AsyncWriteExt as _;

#[derive(Debug, clap::Args)]
pub struct ExecCommand {
    /// The pod (`NAME` or `pod/NAME`).
    pod: String,
    /// The container (default: the pod's first).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// stdin is a terminal (raw mode here, line editing in the pod).
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    client: super::ClientFlags,
}

/// Restores the terminal's settings when dropped.
struct RawMode(Option<rustix::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else { return RawMode(None) };
        let mut raw = saved.clone();
        raw.make_raw();
        if rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).is_err() {
            return RawMode(None);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, saved);
        }
    }
}

impl ExecCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let pod = self.pod.strip_prefix("pod/").or_else(|| self.pod.strip_prefix("pods/")).unwrap_or(&self.pod);
        let options = ExecOptions {
            container: self.container.clone(),
            command: self.command.clone(),
            stdin: self.stdin,
            stdout: true,
            stderr: !self.tty,
            tty: self.tty,
        };
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/exec?{}", options.query());
        let (protocol, socket) = client.websocket(&path, streaming::EXEC_PROTOCOLS).await?;
        let session = streaming::exec_client(socket, &protocol, &options);
        let _raw = self.tty.then(RawMode::enter);
        if let Some(mut input) = session.stdin {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut input).await;
                let _ = input.shutdown().await;
            });
        }
        let copy_out = async {
            if let Some(mut output) = session.stdout {
                let mut stdout = tokio::io::stdout();
                let _ = tokio::io::copy(&mut output, &mut stdout).await;
                let _ = stdout.flush().await;
            }
        };
        let copy_err = async {
            if let Some(mut output) = session.stderr {
                let mut stderr = tokio::io::stderr();
                let _ = tokio::io::copy(&mut output, &mut stderr).await;
                let _ = stderr.flush().await;
            }
        };
        let ((), (), exit) = tokio::join!(copy_out, copy_err, session.exit);
        drop(_raw);
        match exit {
            ExecExit::Success => Ok(()),
            ExecExit::Code(code) => std::process::exit(code),
            ExecExit::Failed(message) => Err(anyhow::anyhow!(message)).context("the command failed"),
        }
    }
}

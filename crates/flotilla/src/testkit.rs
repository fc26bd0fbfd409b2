//! Running a real `flotilla server` process, for the end-to-end tests and the benches
//! (one place, so both start servers the same way).

use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `flotilla server` child process; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The kubeconfig the server wrote for its admin.
    pub kubeconfig: PathBuf,
}

impl ServerProcess {
    /// Starts `binary server` on a loopback ephemeral port with `data_dir`, and waits
    /// (up to a minute) for the line that says it serves.
    pub fn spawn(binary: &Path, data_dir: &Path, extra_args: &[String]) -> Result<Self> {
        let mut child = Command::new(binary)
            .args(["server", "--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("FLOTILLA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} server", binary.display()))?;
        let stdout = child.stdout.take().context("the server has no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Lines before it report --manifests being applied.
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(line);
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(_) => Ok(Self { child, kubeconfig: data_dir.join("kubeconfig") }),
            Err(_) => {
                let _ = child.kill();
                bail!("the server did not start within 60 s (or exited: see its stderr above)")
            }
        }
    }

    /// `kill -9`: no chance to flush or clean up.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Running a real `flotilla server` process, for the end-to-end tests and the benches
//! (one place, so both start servers the same way).

use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A `flotilla server` child process; killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The kubeconfig the server wrote for its admin.
    pub kubeconfig: PathBuf,
    /// The Ingress listeners (ephemeral ports unless the arguments say otherwise).
    pub ingress_http: Option<SocketAddr>,
    pub ingress_https: Option<SocketAddr>,
    /// Where its NodePort and LoadBalancer Services listen: a loopback address of its own,
    /// so that servers running side by side never fight over a port.
    pub service_address: IpAddr,
}

/// A loopback address (all of 127/8 is loopback on Linux) no other server of this
/// process uses.
fn own_loopback() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(127, (pid % 200 + 20) as u8, (n / 250 % 250) as u8, (n % 250 + 1) as u8))
}

/// `http://A https://B` at the end of the server's "listening on" line.
fn ingress_addresses(line: &str) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(rest) = line.split("ingress: ").nth(1) else { return (None, None) };
    let find = |scheme: &str| {
        rest.split([' ', ')']).find_map(|word| word.strip_prefix(scheme).and_then(|a| a.parse::<SocketAddr>().ok()))
    };
    (find("http://"), find("https://"))
}

impl ServerProcess {
    /// Starts `binary server` on a loopback ephemeral port with `data_dir`, and waits
    /// (up to a minute) for the line that says it serves.
    pub fn spawn(binary: &Path, data_dir: &Path, extra_args: &[String]) -> Result<Self> {
        Self::spawn_in(binary, None, data_dir, extra_args)
    }

    /// As [`ServerProcess::spawn`], run in `working_dir` (this process's own when `None`):
    /// a relative `data_dir` or path in `extra_args` is relative to it, as in a user's shell.
    pub fn spawn_in(binary: &Path, working_dir: Option<&Path>, data_dir: &Path, extra_args: &[String]) -> Result<Self> {
        let given = |flag: &str| extra_args.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        let service_address = own_loopback();
        let mut defaults: Vec<String> = Vec::new();
        for (flag, value) in [
            ("--http-addr", "127.0.0.1:0".to_string()),
            ("--https-addr", "127.0.0.1:0".to_string()),
            ("--node-port-address", service_address.to_string()),
            ("--load-balancer-address", service_address.to_string()),
        ] {
            if !given(flag) {
                defaults.extend([flag.to_string(), value]);
            }
        }
        let mut command = Command::new(binary);
        if let Some(dir) = working_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .args(["server", "--api-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(&defaults)
            .args(extra_args)
            .env("FLOTILLA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} server", binary.display()))?;
        let rx = listening_line(child.stdout.take().context("the server has no stdout")?);
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let (ingress_http, ingress_https) = ingress_addresses(&line);
                Ok(Self {
                    child,
                    kubeconfig: working_dir.unwrap_or(Path::new("")).join(data_dir).join("kubeconfig"),
                    ingress_http,
                    ingress_https,
                    service_address,
                })
            }
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

/// The server's "listening on" line (what scripts wait for), read from its stdout on a
/// thread that then keeps draining the pipe so the server never blocks on it.
pub fn listening_line(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
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
        for _ in lines {}
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingress_addresses_are_read_off_the_line() {
        let line = "flotilla API server listening on 127.0.0.1:6443 (kubeconfig: k, node join token: t, ingress: http://127.0.0.1:8080 https://127.0.0.1:8443)";
        let (http, https) = ingress_addresses(line);
        assert_eq!(http, "127.0.0.1:8080".parse().ok());
        assert_eq!(https, "127.0.0.1:8443".parse().ok());
        assert_eq!(ingress_addresses("… ingress: none)"), (None, None));
        assert_ne!(own_loopback(), own_loopback(), "each server its own address");
    }
}

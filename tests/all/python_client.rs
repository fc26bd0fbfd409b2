//! The official Python `kubernetes` client, a client nobody here wrote, drives the
//! server: create, list, watch, patch (all three types), scale and delete.

use crate::support::{Server, repo_root};
use anyhow::{Context as _, Result, bail};
use std::process::Command;

#[tokio::test]
async fn official_python_client_works() -> Result<()> {
    let python = repo_root().join("target/test-venv/bin/python");
    if !python.exists() {
        bail!("{} is missing: run tests/setup.sh first (the README's test command does)", python.display());
    }
    let server = Server::start()?;
    let script = repo_root().join("tests/python/client_test.py");
    let output = Command::new(&python).arg(&script).arg(&server.kubeconfig).output().context("running python")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python client: ok"), "{stdout}");
    Ok(())
}

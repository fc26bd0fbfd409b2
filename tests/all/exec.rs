//! `kubectl exec`, `cp` and `port-forward` with the real kubectl 1.37 (WebSockets by
//! default: `v5.channel.k8s.io` for exec, the SPDY tunnel for port-forward), and the
//! official Python client's `stream()`, against wasm pods: the built-in toolbox runs the
//! commands in the pod's sandbox, `image: nginx` and `image: busybox` are built in.

use crate::support::{Server, repo_root};
use anyhow::{Context as _, Result, bail};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The first hands-on pod of a Kubernetes introduction, verbatim.
const NGINX_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: nginx-pod
spec:
  containers:
  - name: nginx
    image: nginx:latest
    ports:
    - containerPort: 80
";

/// kubectl's exit code, stdout and stderr.
fn kubectl(server: &Server, args: &[&str], stdin: &[u8]) -> Result<(i32, String, String)> {
    let mut child = server.kubectl_command(args)?.stdin(Stdio::piped()).spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin)?;
    }
    let output = child.wait_with_output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn ok(server: &Server, args: &[&str]) -> Result<String> {
    let (code, out, err) = kubectl(server, args, b"")?;
    if code != 0 {
        bail!("kubectl {} exited {code}:\n{out}\n{err}", args.join(" "));
    }
    Ok(out)
}

#[tokio::test]
async fn kubectl_exec_cp_and_port_forward() -> Result<()> {
    let server = Server::start()?;
    let (code, out, err) = kubectl(&server, &["apply", "-f", "-"], NGINX_POD.as_bytes())?;
    assert_eq!(code, 0, "{out}{err}");
    ok(&server, &["wait", "--for=condition=Ready", "pod/nginx-pod", "--timeout=60s"])?;

    // A script: stdout, stderr and the exit code come back apart.
    let (code, out, err) =
        kubectl(&server, &["exec", "nginx-pod", "--", "sh", "-c", "echo hello; echo oops >&2; exit 3"], b"")?;
    assert_eq!((code, out.as_str()), (3, "hello\n"), "{err}");
    assert!(err.contains("oops"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");

    // A pipeline, `$(…)`, `$?` and `2>&1`.
    let script = "n=$(echo a b c | wc -w); echo \"words: $n\"; ls /nonexistent 2>&1 | grep -c 'No such'; false; echo \"status $?\"";
    let out = ok(&server, &["exec", "nginx-pod", "--", "sh", "-c", script])?;
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["words:", "3", "1", "status", "1"], "{out}");

    // stdin, binary bytes included, and its end (v5's close): `cat` ends.
    let payload: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let mut child = server.kubectl_command(&["exec", "-i", "nginx-pod", "--", "cat"])?.stdin(Stdio::piped()).spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    let writer = {
        let payload = payload.clone();
        std::thread::spawn(move || input.write_all(&payload))
    };
    let output = child.wait_with_output()?;
    writer.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout == payload, "cat returned {} bytes, not the {} sent", output.stdout.len(), payload.len());

    // The pod's own container on localhost, as containers of a pod share it.
    let out = ok(&server, &["exec", "nginx-pod", "--", "wget", "-qO-", "localhost"])?;
    assert!(out.contains("Welcome to nginx!"), "{out}");
    // An unknown command answers as a shell does.
    let (code, _, err) = kubectl(&server, &["exec", "nginx-pod", "--", "no-such-command"], b"")?;
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("not found"), "{err}");

    // The sandbox: the node's files and hosts outside the allow-list are out of reach.
    let (code, _, err) = kubectl(&server, &["exec", "nginx-pod", "--", "cat", "/etc/passwd"], b"")?;
    assert_ne!(code, 0, "the node's /etc/passwd is not the pod's");
    assert!(err.contains("No such file"), "{err}");
    let node_file = server.data_dir().join("store.redb");
    let (code, _, _) = kubectl(&server, &["exec", "nginx-pod", "--", "ls", &node_file.to_string_lossy()], b"")?;
    assert_ne!(code, 0, "the node's data directory is not the pod's");
    let (code, _, err) = kubectl(&server, &["exec", "nginx-pod", "--", "wget", "-qO-", "http://example.com/"], b"")?;
    assert_ne!(code, 0, "example.com is not in the pod's allow-list");
    assert!(err.to_lowercase().contains("denied"), "{err}");

    // `kubectl cp` both ways (tar through exec), into the container's own /tmp.
    let local = tempfile::tempdir()?;
    let upload = local.path().join("notes.txt");
    std::fs::write(&upload, "written on the laptop\n")?;
    ok(&server, &["cp", &upload.to_string_lossy(), "nginx-pod:/tmp/notes.txt"])?;
    assert_eq!(ok(&server, &["exec", "nginx-pod", "--", "cat", "/tmp/notes.txt"])?, "written on the laptop\n");
    ok(&server, &["exec", "nginx-pod", "--", "sh", "-c", "mkdir -p /tmp/out && echo from the pod > /tmp/out/a.txt"])?;
    let download = local.path().join("out");
    ok(&server, &["cp", "nginx-pod:/tmp/out", &download.to_string_lossy()])?;
    assert_eq!(std::fs::read_to_string(download.join("a.txt"))?, "from the pod\n");

    // `exec -it` with a terminal, driven through a pty: line editing and echo in the
    // pod, the shell's prompt, its exit code.
    let kubectl_path = repo_root().join("target/test-venv/bin/kubectl");
    let command =
        format!("{} --kubeconfig {} exec -it nginx-pod -- sh", kubectl_path.display(), server.kubeconfig.display());
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", server.data_dir().join("home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut input = child.stdin.take().context("stdin")?;
    let mut output = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = output.read_to_end(&mut all);
        String::from_utf8_lossy(&all).into_owned()
    });
    std::thread::sleep(Duration::from_secs(2));
    input.write_all(b"echo $((6 * 7))xx\x7f\x7f\r")?;
    std::thread::sleep(Duration::from_millis(500));
    input.write_all(b"wget -qO- localhost\r")?;
    std::thread::sleep(Duration::from_millis(500));
    input.write_all(b"exit 5\r")?;
    let status = child.wait()?;
    drop(input);
    let screen = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))?;
    assert_eq!(status.code(), Some(5), "{screen}");
    assert!(screen.contains("42\r\n"), "the answer, with the terminal's CR NL: {screen:?}");
    assert!(!screen.contains("42xx"), "backspace edited the line before the shell read it: {screen:?}");
    assert!(screen.contains("# "), "a prompt: {screen:?}");
    assert!(screen.contains("Welcome to nginx!"), "the tutorial's wget inside the pod: {screen:?}");

    // port-forward: two connections at once and a 10 MiB body, from the host.
    let mut forward =
        server.kubectl_command(&["port-forward", "pod/nginx-pod", ":80"])?.stdout(Stdio::piped()).spawn()?;
    let port = forwarded_port(&mut forward)?;
    let url = format!("http://127.0.0.1:{port}/");
    let (first, second) = tokio::join!(curl(&url), curl(&url));
    for body in [first?, second?] {
        assert!(body.contains("Welcome to nginx!"), "{body}");
    }
    forward.kill()?;

    // `port-forward svc/NAME` (kubectl resolves the Service's pod and target port) with
    // a 10 MiB body through the tunnel and back.
    let (code, out, err) = kubectl(&server, &["apply", "-f", "-"], ECHO.as_bytes())?;
    assert_eq!(code, 0, "{out}{err}");
    ok(&server, &["wait", "--for=condition=Ready", "pod/echo", "--timeout=60s"])?;
    let mut forward = server.kubectl_command(&["port-forward", "svc/echo", ":80"])?.stdout(Stdio::piped()).spawn()?;
    let port = forwarded_port(&mut forward)?;
    let body = local.path().join("body");
    std::fs::write(&body, vec![b'x'; 10 << 20])?;
    let url = format!("http://127.0.0.1:{port}/upload");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(&url)
        .output()?;
    forward.kill()?;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let echoed = &output.stdout;
    assert!(echoed.starts_with(b"POST /upload"), "{}", String::from_utf8_lossy(&echoed[..echoed.len().min(200)]));
    assert!(echoed.ends_with(&vec![b'x'; 10 << 20]), "the 10 MiB body came back whole ({} bytes)", echoed.len());

    // The classic busybox pod runs unchanged: a shell loop of `date` and `sleep`.
    let (code, out, err) = kubectl(&server, &["apply", "-f", "-"], BUSYBOX.as_bytes())?;
    assert_eq!(code, 0, "{out}{err}");
    ok(&server, &["wait", "--for=condition=Ready", "pod/busybox", "--timeout=60s"])?;
    let log = crate::support::eventually("a date in the busybox pod's log", Duration::from_secs(20), || async {
        let log = ok(&server, &["logs", "busybox"])?;
        Ok(log.contains("UTC").then_some(log))
    })
    .await?;
    assert!(log.lines().count() >= 1, "{log}");

    // The built-in images are listed, and the tutorial's last step.
    let (listed, out, err) = server.cli(&["image", "ls"])?;
    assert!(listed && out.contains("busybox:* (built-in") && out.contains("nginx:* (built-in"), "{out}{err}");
    ok(&server, &["delete", "pod", "nginx-pod"])?;

    // `kubectl attach -i` to a command with `stdin: true`: what is typed reaches it.
    let (code, out, err) = kubectl(&server, &["apply", "-f", "-"], ATTACH.as_bytes())?;
    assert_eq!(code, 0, "{out}{err}");
    ok(&server, &["wait", "--for=condition=Ready", "pod/reader", "--timeout=60s"])?;
    let (code, out, err) = kubectl(&server, &["attach", "-i", "reader"], b"hello\n")?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("got: hello"), "{out}{err}");
    Ok(())
}

/// An echo pod behind a Service whose port 80 targets the pod's 8080.
const ECHO: &str = "apiVersion: v1
kind: Pod
metadata:
  name: echo
  labels: {app: echo}
spec:
  containers:
  - name: echo
    image: echo
    ports:
    - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 8080
";

/// The busybox pod of countless tutorials.
const BUSYBOX: &str = "apiVersion: v1
kind: Pod
metadata:
  name: busybox
spec:
  containers:
  - name: busybox
    image: busybox:1.36
    command: [\"sh\", \"-c\", \"while true; do date; sleep 1; done\"]
";

/// A command waiting for a line on its stdin.
const ATTACH: &str = "apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  restartPolicy: Never
  containers:
  - name: reader
    image: busybox
    stdin: true
    stdinOnce: true
    command: [\"sh\", \"-c\", \"read line; echo got: $line\"]
";

/// The local port `kubectl port-forward` prints it forwards from.
pub fn forwarded_port(forward: &mut std::process::Child) -> Result<u16> {
    let mut lines = BufReader::new(forward.stdout.take().context("stdout")?);
    let mut line = String::new();
    lines.read_line(&mut line)?;
    // Keep reading (and dropping) what it prints, so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    line.split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no local port in {line:?}"))
}

/// A GET with the real curl.
async fn curl(url: &str) -> Result<String> {
    let url = url.to_string();
    let output =
        tokio::task::spawn_blocking(move || Command::new("curl").args(["-sS", "--max-time", "20", &url]).output())
            .await??;
    if !output.status.success() {
        bail!("curl: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The official Python client's `stream()`: exec and port-forward (tests/python/stream_test.py).
#[tokio::test]
async fn python_client_streams() -> Result<()> {
    let python = repo_root().join("target/test-venv/bin/python");
    anyhow::ensure!(python.exists(), "{} is missing: run tests/setup.sh first", python.display());
    let server = Server::start()?;
    let (code, out, err) = kubectl(&server, &["apply", "-f", "-"], NGINX_POD.as_bytes())?;
    assert_eq!(code, 0, "{out}{err}");
    ok(&server, &["wait", "--for=condition=Ready", "pod/nginx-pod", "--timeout=60s"])?;
    let script = repo_root().join("tests/python/stream_test.py");
    let output = Command::new(&python).arg(&script).arg(&server.kubeconfig).arg("nginx-pod").output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "python stream test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("python stream: ok"), "{stdout}");
    Ok(())
}

//! The agent's side of `pods/exec` and `pods/portforward`: a command run in a pod's
//! sandbox, with a terminal's line discipline when asked for one, and a connection to
//! a pod's port.
//!
//! **Which command runs.** `kubectl exec POD -- CMD ARGS…` runs a fresh instance of a
//! command image beside the container's run, in its sandbox (the runtime's
//! [`ExecIo`]): the container's own image when it is a command and `CMD` names it (the
//! image's short name, or the container's `command[0]`), otherwise the node's built-in
//! toolbox (`sh`, `ls`, `cat`, `wget`…, which answers an unknown `CMD` as a shell does,
//! exit 127). The exec ends with the container's run, and when its caller goes.
//!
//! **A terminal** (`-t`) is what a kernel's pty would give: input is edited a line at a
//! time and echoed (`CR` → `NL`, backspace, `^U`), `^D` on an empty line is end of input,
//! `^C` interrupts (the command ends with 130, as after `SIGINT`), and output's `NL`
//! becomes `CR NL`. The command is told its stdio is a terminal.
//!
//! **Port-forward** connects to the container that declares `containerPort` (a pod whose
//! containers declare no ports listens with its first HTTP container on any port): the
//! connection speaks HTTP/1.1 into that container, as a TCP connection to the pod's port
//! would.

use crate::Node;
use crate::container::{Handle, Run, Running};
use bytes::Bytes;
use flotilla_api::{ApiError, Reason};
use flotilla_client::streaming::{Duplex, ExecExit, ExecOptions, ExecSession, TerminalSize};
use flotilla_runtime::{ExecIo, Exit};
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::sync::{mpsc, oneshot};

/// Bytes in flight in each of an exec's pipes.
const PIPE: usize = 64 * 1024;
/// How long a terminal's command waits for the client's first size before it starts.
const FIRST_SIZE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// The longest line a terminal holds while it is edited (a kernel's is 4096).
const MAX_LINE: usize = 4096;

impl Node {
    /// The container's live run, or the error kubelet gives for a container that has none.
    fn running(&self, namespace: &str, pod: &str, container: Option<&str>) -> Result<(Arc<Handle>, Running), ApiError> {
        let handles = self.handles(namespace, pod).ok_or_else(|| {
            ApiError::new(
                Reason::NotFound,
                format!("pod {pod} in namespace {namespace} is not running on node {}", self.name()),
            )
        })?;
        let handle = handles.container(container).cloned().ok_or_else(|| {
            ApiError::bad_request(format!("container {} is not valid for pod {pod}", container.unwrap_or("")))
        })?;
        let running = handle.lock().running.clone();
        let running = running.ok_or_else(|| {
            let name = handle.lock().name.clone();
            ApiError::bad_request(format!("container {name} in pod {pod} is not running"))
        })?;
        Ok((handle, running))
    }

    /// Starts `options.command` in the pod (see the module docs).
    pub async fn exec_session(
        &self,
        namespace: &str,
        pod: &str,
        options: &ExecOptions,
    ) -> Result<ExecSession, ApiError> {
        if options.command.is_empty() {
            return self.attach_session(namespace, pod, options);
        }
        let (_, running) = self.running(namespace, pod, options.container.as_deref())?;
        let image = if runs_itself(&running, &options.command[0]) {
            running.image.clone()
        } else {
            self.inner.shared.images.toolbox().map_err(|e| ApiError::internal(format!("the toolbox: {e}")))?
        };
        let mut io = ExecIo { args: options.command.clone(), tty: options.tty, ..ExecIo::default() };
        let (interrupt, mut interrupted) = oneshot::channel::<()>();
        let mut session = ExecSession::without_streams();
        let mut first_size = None;
        if options.tty {
            let (to_program, program_in) = tokio::io::duplex(PIPE);
            let (program_out, from_program) = tokio::io::duplex(PIPE);
            let (program_err, from_program_err) = tokio::io::duplex(PIPE);
            let (client_in, from_client) = tokio::io::duplex(PIPE);
            let (to_client, client_out) = tokio::io::duplex(PIPE);
            io.stdin = options.stdin.then(|| Box::new(program_in) as flotilla_runtime::ExecReader);
            io.stdout = Some(Box::new(program_out));
            io.stderr = Some(Box::new(program_err));
            let (echo, echoes) = mpsc::channel::<Bytes>(16);
            let (output, outputs) = mpsc::channel::<Bytes>(16);
            tokio::spawn(translate_output(from_program, output.clone()));
            tokio::spawn(translate_output(from_program_err, output));
            tokio::spawn(write_terminal(outputs, echoes, to_client));
            if options.stdin {
                tokio::spawn(line_discipline(from_client, to_program, echo, interrupt));
                session.stdin = Some(Box::new(client_in));
            }
            session.stdout = Some(Box::new(client_out));
            let (resize, resizes) = mpsc::channel::<TerminalSize>(4);
            session.resize = Some(resize);
            first_size = Some(resizes);
        } else {
            if options.stdin {
                let (client_in, program_in) = tokio::io::duplex(PIPE);
                io.stdin = Some(Box::new(program_in));
                session.stdin = Some(Box::new(client_in));
            }
            if options.stdout {
                let (program_out, client_out) = tokio::io::duplex(PIPE);
                io.stdout = Some(Box::new(program_out));
                session.stdout = Some(Box::new(client_out));
            }
            if options.stderr {
                let (program_err, client_err) = tokio::io::duplex(PIPE);
                io.stderr = Some(Box::new(program_err));
                session.stderr = Some(Box::new(client_err));
            }
            drop(interrupt);
        }
        let (exited, exit) = oneshot::channel();
        let mut ended = running.ended.clone();
        let run = running.run.clone();
        let task = tokio::spawn(async move {
            // A WASI command cannot ask its terminal's size: it gets the first size
            // kubectl sends (right after connecting) as COLUMNS and LINES, as a shell
            // would set them; later sizes are taken and dropped.
            if let Some(mut sizes) = first_size {
                let first = tokio::time::timeout(FIRST_SIZE_WAIT, sizes.recv()).await.ok().flatten();
                if let Some(size) = first {
                    io.env.push(("COLUMNS".into(), size.width.to_string()));
                    io.env.push(("LINES".into(), size.height.to_string()));
                }
                tokio::spawn(async move { while sizes.recv().await.is_some() {} });
            }
            let exec = async {
                match &run {
                    Run::Http(pod) => pod.exec(&image, io).await,
                    Run::Command(pod) => pod.exec(&image, io).await,
                }
            };
            let exit = tokio::select! {
                exit = exec => exec_exit(exit),
                Ok(()) = &mut interrupted => ExecExit::Code(130),
                _ = ended.changed() => ExecExit::Failed("the container stopped".into()),
            };
            let _ = exited.send(exit);
        });
        session.exit = Box::pin(async move {
            // The caller dropping the session ends the command.
            let _kill = AbortOnDrop(task);
            exit.await.unwrap_or_else(|_| ExecExit::Failed("the command was killed".into()))
        });
        Ok(session)
    }

    /// `kubectl attach`: the container's output from now on (its log as it grows, split
    /// into stdout and stderr unless a terminal merges them), and its stdin when the
    /// container has one. Ends with the container's run.
    fn attach_session(&self, namespace: &str, pod: &str, options: &ExecOptions) -> Result<ExecSession, ApiError> {
        let (handle, running) = self.running(namespace, pod, options.container.as_deref())?;
        let (name, logs, container_stdin) = {
            let slot = handle.lock();
            (slot.name.clone(), slot.logs.clone(), slot.stdin.clone())
        };
        let container_stdin = match (options.stdin, container_stdin) {
            (false, _) => None,
            (true, Some(sender)) => Some(sender),
            (true, None) => {
                return Err(ApiError::bad_request(format!(
                    "container {name} in pod {pod} has no stdin to attach to (it is not `stdin: true`)"
                )));
            }
        };
        let mut session = ExecSession::without_streams();
        if let Some(sender) = container_stdin {
            let (client_in, mut from_client) = tokio::io::duplex(PIPE);
            session.stdin = Some(Box::new(client_in));
            tokio::spawn(async move {
                let mut buffer = vec![0; 16 * 1024];
                loop {
                    match from_client.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sender.send(Some(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = sender.send(None).await;
            });
        }
        let (out_write, out_read) = tokio::io::duplex(PIPE);
        let (err_write, err_read) = tokio::io::duplex(PIPE);
        let tty = options.tty;
        let (want_out, want_err) = (options.stdout, options.stderr && !tty);
        session.stdout = want_out.then(|| Box::new(out_read) as flotilla_client::streaming::ExecOutput);
        session.stderr = want_err.then(|| Box::new(err_read) as flotilla_client::streaming::ExecOutput);
        let mut ended = running.ended.clone();
        let follow = tokio::spawn(async move {
            let (mut out, mut err) = (out_write, err_write);
            let mut seq = logs.lines().last().map_or(0, |line| line.seq);
            loop {
                let lines = logs.next_after(seq).await;
                let Some(last) = lines.last() else { return };
                seq = last.seq;
                for line in &lines {
                    let end: &[u8] = if tty { b"\r\n" } else { b"\n" };
                    let to_err = line.stream == flotilla_runtime::LogStream::Stderr && !tty;
                    let (writer, wanted) = if to_err { (&mut err, want_err) } else { (&mut out, want_out) };
                    if wanted
                        && (writer.write_all(line.line.as_bytes()).await.is_err()
                            || writer.write_all(end).await.is_err())
                    {
                        return;
                    }
                }
            }
        });
        session.exit = Box::pin(async move {
            let mut follow = AbortOnDrop(follow);
            let _ = ended.changed().await;
            // The run's last lines, then the end (its log closes with the run).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut follow.0).await;
            ExecExit::Success
        });
        Ok(session)
    }

    /// A connection to `port` of the pod (see the module docs): HTTP/1.1 into the
    /// container listening there.
    pub fn port_forward_stream(&self, namespace: &str, pod: &str, port: u16) -> Result<Box<dyn Duplex>, ApiError> {
        let handles = self.handles(namespace, pod).ok_or_else(|| {
            ApiError::new(
                Reason::NotFound,
                format!("pod {pod} in namespace {namespace} is not running on node {}", self.name()),
            )
        })?;
        let runs: Vec<(String, Running)> = handles.containers.iter().filter_map(|h| live_run(h)).collect();
        let container = listener(&runs, port).map_err(|why| {
            ApiError::internal(format!(
                "error forwarding port {port} to pod {namespace}/{pod}: failed to connect to localhost:{port} inside \
                 the pod: {why}"
            ))
        })?;
        let (client, server) = tokio::io::duplex(PIPE);
        let (node, namespace, pod, container) =
            (self.clone(), namespace.to_string(), pod.to_string(), container.clone());
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let (node, namespace, pod, container) = (node.clone(), namespace.clone(), pod.clone(), container.clone());
            async move {
                let request = request.map(|body| {
                    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(body, |e| {
                        Box::new(e) as flotilla_client::BoxError
                    }))
                });
                let response = match node.dispatch_to(&namespace, &pod, Some(&container), request).await {
                    Ok(response) => response,
                    Err(error) => {
                        let mut response =
                            http::Response::new(flotilla_client::full_body(format!("{}\n", error.message)));
                        *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                        response
                    }
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "port-forward connection ended with an error");
            }
        });
        Ok(Box::new(client))
    }
}

/// A container's name and live run.
fn live_run(handle: &Handle) -> Option<(String, Running)> {
    let slot = handle.lock();
    slot.running.clone().map(|running| (slot.name.clone(), running))
}

/// The container of `runs` listening on `port` (see the module docs), or why none is.
fn listener(runs: &[(String, Running)], port: u16) -> Result<String, String> {
    let declared = runs.iter().find(|(_, r)| r.ports.contains(&port));
    let none_declared = runs.iter().all(|(_, r)| r.ports.is_empty());
    let listening =
        declared.or_else(|| none_declared.then(|| runs.iter().find(|(_, r)| matches!(r.run, Run::Http(_)))).flatten());
    match listening {
        None => Err("connection refused (no container of the pod listens on it)".into()),
        Some((name, running)) if !matches!(running.run, Run::Http(_)) => {
            Err(format!("connection refused (container {name} is a command, it listens on no port)"))
        }
        Some((name, _)) => Ok(name.clone()),
    }
}

/// A pod's containers as its `localhost`: a request to `localhost:PORT` from any of
/// them (or from a command exec'd in the pod) goes to the container listening on PORT.
/// Holds its containers weakly: they hold it (through their runs' specs).
#[derive(Debug)]
pub(crate) struct PodLocalhost {
    pub(crate) containers: Vec<std::sync::Weak<Handle>>,
}

impl flotilla_runtime::ServiceRouter for PodLocalhost {
    fn is_service_host(&self, _namespace: &str, authority: &http::uri::Authority) -> bool {
        matches!(authority.host(), "localhost" | "127.0.0.1" | "[::1]")
    }

    fn send(
        &self,
        _namespace: &str,
        request: http::Request<flotilla_runtime::EdgeBody>,
    ) -> flotilla_runtime::BoxFuture<http::Response<flotilla_runtime::EdgeBody>> {
        let port = request.uri().port_u16().unwrap_or(80);
        let handles: Vec<Arc<Handle>> = self.containers.iter().filter_map(std::sync::Weak::upgrade).collect();
        let runs: Vec<(String, Running)> = handles.iter().filter_map(|h| live_run(h)).collect();
        let target = listener(&runs, port).and_then(|name| {
            runs.iter()
                .find_map(|(n, r)| match &r.run {
                    Run::Http(pod) if *n == name => Some(pod.clone()),
                    _ => None,
                })
                .ok_or_else(|| "connection refused".to_string())
        });
        Box::pin(async move {
            let answer = |code: u16, text: String| {
                let mut response = http::Response::new(flotilla_client::full_body(text));
                *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
                response
            };
            let pod = match target {
                Ok(pod) => pod,
                Err(why) => return answer(502, format!("localhost:{port}: {why}\n")),
            };
            let request = request.map(|body| {
                http_body_util::BodyExt::map_err(body, |e| {
                    flotilla_runtime::BodyError::InternalError(Some(e.to_string()))
                })
            });
            match pod.handle(request).await {
                Ok(response) => response.map(|body| {
                    http_body_util::BodyExt::boxed_unsync(http_body_util::BodyExt::map_err(body, |e| {
                        Box::new(e) as flotilla_client::BoxError
                    }))
                }),
                Err(error) => answer(502, format!("localhost:{port}: {error}\n")),
            }
        })
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a command's end reads on the error channel.
fn exec_exit(exit: Exit) -> ExecExit {
    match exit {
        Exit::Code(0) => ExecExit::Success,
        Exit::Code(code) => ExecExit::Code(code),
        // Killed, as the kernel's OOM killer or a timeout's SIGKILL would: 128 + 9.
        Exit::OutOfMemory | Exit::DeadlineExceeded => ExecExit::Code(137),
        Exit::Trap(message) => ExecExit::Failed(format!("the command trapped: {message}")),
        Exit::StartError(message) => ExecExit::Failed(message),
    }
}

/// The program's output on a terminal: `NL` → `CR NL`.
async fn translate_output(mut from: DuplexStream, to: mpsc::Sender<Bytes>) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut out = Vec::with_capacity(n + n / 8);
        for &byte in &buffer[..n] {
            if byte == b'\n' {
                out.push(b'\r');
            }
            out.push(byte);
        }
        if to.send(Bytes::from(out)).await.is_err() {
            return;
        }
    }
}

/// Writes the program's output and the terminal's echo to the client, until the
/// program's output ends (its echo may go on no longer).
async fn write_terminal(mut outputs: mpsc::Receiver<Bytes>, mut echoes: mpsc::Receiver<Bytes>, mut to: DuplexStream) {
    loop {
        let bytes = tokio::select! {
            bytes = outputs.recv() => match bytes {
                Some(bytes) => bytes,
                None => break,
            },
            Some(bytes) = echoes.recv() => bytes,
        };
        if to.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

/// A terminal's canonical input mode: the client's keys, edited a line at a time.
async fn line_discipline(
    mut from: DuplexStream,
    to: DuplexStream,
    echo: mpsc::Sender<Bytes>,
    interrupt: oneshot::Sender<()>,
) {
    let mut to = Some(to);
    let mut interrupt = Some(interrupt);
    let mut line: Vec<u8> = Vec::new();
    let mut escape = Escape::None;
    let mut buffer = vec![0; 4096];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut echoed = Vec::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        let mut end_of_input = false;
        for &byte in &buffer[..n] {
            // Arrow keys and the like: ESC [ … final byte, dropped.
            match escape {
                Escape::Start => {
                    escape = if byte == b'[' || byte == b'O' { Escape::Sequence } else { Escape::None };
                    continue;
                }
                Escape::Sequence => {
                    if (0x40..=0x7e).contains(&byte) {
                        escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match byte {
                0x1b => escape = Escape::Start,
                b'\r' | b'\n' => {
                    echoed.extend_from_slice(b"\r\n");
                    line.push(b'\n');
                    lines.push(std::mem::take(&mut line));
                }
                0x7f | 0x08 => {
                    if !line.is_empty() {
                        // A whole UTF-8 character goes.
                        while let Some(last) = line.pop() {
                            if last & 0xc0 != 0x80 {
                                break;
                            }
                        }
                        echoed.extend_from_slice(b"\x08 \x08");
                    }
                }
                0x15 => {
                    for _ in 0..String::from_utf8_lossy(&line).chars().count() {
                        echoed.extend_from_slice(b"\x08 \x08");
                    }
                    line.clear();
                }
                0x03 => {
                    echoed.extend_from_slice(b"^C\r\n");
                    line.clear();
                    if let Some(interrupt) = interrupt.take() {
                        let _ = interrupt.send(());
                    }
                }
                0x04 => {
                    if line.is_empty() {
                        end_of_input = true;
                    } else {
                        lines.push(std::mem::take(&mut line));
                    }
                }
                byte if byte < 0x20 && byte != b'\t' => {}
                byte => {
                    if line.len() < MAX_LINE {
                        line.push(byte);
                        echoed.push(byte);
                    }
                }
            }
        }
        if !echoed.is_empty() && echo.send(Bytes::from(echoed)).await.is_err() {
            break;
        }
        for line in lines {
            if let Some(writer) = to.as_mut()
                && writer.write_all(&line).await.is_err()
            {
                to = None;
            }
        }
        if end_of_input && let Some(mut writer) = to.take() {
            let _ = writer.shutdown().await;
        }
    }
}

#[derive(Clone, Copy)]
enum Escape {
    None,
    Start,
    Sequence,
}

/// Whether `command` names the container's own image (a command image run with new args).
fn runs_itself(running: &Running, command: &str) -> bool {
    if !matches!(running.run, Run::Command(_)) {
        return false;
    }
    let short = short_name(&running.image_name);
    command == short || running.command.as_deref() == Some(command)
}

/// `registry:5000/team/app:v1` → `app`.
fn short_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name("batch"), "batch");
        assert_eq!(short_name("registry:5000/team/app:v1"), "app");
        assert_eq!(short_name("busybox@sha256:abc"), "busybox");
    }
}

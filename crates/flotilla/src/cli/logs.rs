//! `flotilla logs POD`: a pod's container log, as `kubectl logs` prints it.

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use std::io::Write as _;

#[derive(Debug, clap::Args)]
pub struct LogsCommand {
    /// The pod (`NAME` or `pod/NAME`).
    pod: String,
    /// The container (default: the pod's only or first container).
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep printing new lines until the container stops.
    #[arg(short = 'f', long)]
    follow: bool,
    /// The previous run's log, after a restart.
    #[arg(short = 'p', long)]
    previous: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<u64>,
    /// Only lines newer than this many seconds (`30`, `5s`, `2m`, `1h`).
    #[arg(long)]
    since: Option<String>,
    /// Prefix each line with its time (RFC 3339).
    #[arg(long)]
    timestamps: bool,
    #[command(flatten)]
    client: super::ClientFlags,
}

fn seconds(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().with_context(|| format!("--since {text}: want e.g. 30s, 5m or 1h"))?;
    Ok(match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        other => anyhow::bail!("--since {text}: unknown unit {other:?}"),
    })
}

impl LogsCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let pod = self.pod.strip_prefix("pod/").or_else(|| self.pod.strip_prefix("pods/")).unwrap_or(&self.pod);
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(container) = &self.container {
            query.append_pair("container", container);
        }
        if self.follow {
            query.append_pair("follow", "true");
        }
        if self.previous {
            query.append_pair("previous", "true");
        }
        if let Some(tail) = self.tail {
            query.append_pair("tailLines", &tail.to_string());
        }
        if let Some(since) = &self.since {
            query.append_pair("sinceSeconds", &seconds(since)?.to_string());
        }
        if self.timestamps {
            query.append_pair("timestamps", "true");
        }
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/log?{}", query.finish());
        let (status, mut body) = client.stream(&path).await?;
        if !status.is_success() {
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let error = flotilla_api::ApiError::from_status_body(status.as_u16(), &bytes);
            anyhow::bail!("Error from server ({}): {}", error.reason.as_str(), error.message);
        }
        let mut stdout = std::io::stdout();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.context("reading the log")?.into_data() {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
        }
        Ok(())
    }
}

//! `flotilla image push NAME:TAG FILE.wasm` and `flotilla image ls`: the cluster's image
//! registry, kept by the API server.

use anyhow::Context as _;
use http::Method;

#[derive(Debug, clap::Args)]
pub struct ImageCommand {
    #[command(subcommand)]
    action: ImageAction,
    #[command(flatten)]
    client: super::ClientFlags,
}

#[derive(Debug, clap::Subcommand)]
enum ImageAction {
    /// Upload a component as NAME:TAG; pods name it in `image:`.
    Push {
        /// `NAME[:TAG]` (`latest` if no tag).
        image: String,
        /// The component (`.wasm`, built for wasm32-wasip2).
        file: std::path::PathBuf,
    },
    /// List the pushed images.
    Ls,
}

impl ImageCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, _) = self.client.connect()?;
        match self.action {
            ImageAction::Push { image, file } => {
                let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let response = client
                    .send(Method::PUT, &format!("/flotilla/v1/images/{image}"), "application/wasm", bytes)
                    .await?
                    .ok()?;
                println!(
                    "pushed {} ({}, {} bytes)",
                    response["image"].as_str().unwrap_or(&image),
                    response["digest"].as_str().unwrap_or(""),
                    response["size"]
                );
            }
            ImageAction::Ls => {
                let response = client.get("/flotilla/v1/images").await?.ok()?;
                for image in response["images"].as_array().into_iter().flatten() {
                    println!("{}", image.as_str().unwrap_or_default());
                }
                // Pushed images of the same name win over these.
                for image in response["builtin"].as_array().into_iter().flatten() {
                    let (name, what) = (image["name"].as_str().unwrap_or_default(), image["description"].as_str());
                    println!("{name}:* (built-in: {})", what.unwrap_or_default());
                }
            }
        }
        Ok(())
    }
}

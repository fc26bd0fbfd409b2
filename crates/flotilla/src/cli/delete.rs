//! `flotilla delete`: delete objects named on the command line, selected by labels, or
//! described in manifest files.

use anyhow::bail;
use clap::{Args, ValueEnum};
use flotilla_api::ResourceType;
use http::Method;
use serde_json::{Value, json};

use super::apply::{Located, locate, read_manifests};
use super::get::{
    display_name, finish, is_not_found, lookup_kind, meta_str, query_string, report_error, resource_path,
};
use crate::client::Client;

/// What happens to the objects a deleted object owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Cascade {
    /// Delete the object now; the garbage collector deletes its dependents afterwards.
    #[value(alias = "true")]
    Background,
    /// Delete the dependents first, then the object.
    Foreground,
    /// Leave the dependents behind.
    #[value(alias = "false")]
    Orphan,
}

impl Cascade {
    fn policy(self) -> &'static str {
        match self {
            Self::Background => "Background",
            Self::Foreground => "Foreground",
            Self::Orphan => "Orphan",
        }
    }
}

#[derive(Debug, Args)]
pub struct DeleteCommand {
    /// `KIND NAME...`, `KIND/NAME...`, or `KIND` with `-l` or `--all`.
    args: Vec<String>,
    /// Delete the objects in these manifest files or directories (`-` for stdin).
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Delete every object of the kind matching this label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    all: bool,
    /// What happens to dependents: background, foreground or orphan.
    #[arg(long, value_enum, default_value = "background")]
    cascade: Cascade,
    /// Treat objects that do not exist as deleted.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    client: super::ClientFlags,
}

/// The DeleteOptions body sent with every delete.
fn delete_options(cascade: Cascade) -> Value {
    json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": cascade.policy()})
}

/// `deployment.apps "web" deleted`.
fn deleted_line(rt: &ResourceType, name: &str) -> String {
    format!("{} \"{name}\" deleted", display_name(rt))
}

/// What the command line asks to delete (besides manifest files).
#[derive(Debug)]
enum Targets {
    /// Objects by kind and name.
    Named(Vec<(&'static ResourceType, String)>),
    /// Every object of these kinds matching the selector (`None`: all of them).
    Collection(Vec<&'static ResourceType>, Option<String>),
}

fn parse_targets(args: &[String], selector: Option<&str>, all: bool) -> anyhow::Result<Targets> {
    let Some(first) = args.first() else {
        bail!("you must specify the type of resource to delete, or -f");
    };
    if first.contains('/') {
        if selector.is_some() || all {
            bail!("name cannot be provided when a selector or --all is specified");
        }
        let mut named = Vec::new();
        for arg in args {
            let Some((kind, name)) = arg.split_once('/') else {
                bail!(
                    "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"
                );
            };
            named.push((lookup_kind(kind)?, name.to_string()));
        }
        return Ok(Targets::Named(named));
    }
    let kinds = first.split(',').filter(|k| !k.is_empty()).map(lookup_kind).collect::<anyhow::Result<Vec<_>>>()?;
    let names = &args[1..];
    match (names.is_empty(), selector, all) {
        (false, None, false) => {
            Ok(Targets::Named(kinds.iter().flat_map(|rt| names.iter().map(|n| (*rt, n.clone()))).collect()))
        }
        (false, _, _) => bail!("name cannot be provided when a selector or --all is specified"),
        (true, Some(selector), _) => Ok(Targets::Collection(kinds, Some(selector.to_string()))),
        (true, None, true) => Ok(Targets::Collection(kinds, None)),
        (true, None, false) => {
            bail!("resource(s) were provided, but no name was specified (use -l or --all)")
        }
    }
}

impl DeleteCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let options = delete_options(self.cascade);
        let mut failures = 0;
        if !self.files.is_empty() {
            if !self.args.is_empty() {
                bail!("resource types and names cannot be given together with -f");
            }
            let flag = self.client.namespace.as_deref();
            for manifest in read_manifests(&self.files)? {
                let result = match locate(&manifest.object, flag, &namespace) {
                    Ok(Located { rt, namespace, name }) => {
                        self.delete_one(&client, rt, namespace.as_deref(), &name, &options).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    failures += 1;
                    report_error(&e, Some(&manifest.source));
                }
            }
            return finish(failures);
        }
        match parse_targets(&self.args, self.selector.as_deref(), self.all)? {
            Targets::Named(named) => {
                for (rt, name) in named {
                    let result = self.delete_one(&client, rt, Some(&namespace), &name, &options).await;
                    if let Err(e) = result {
                        failures += 1;
                        report_error(&e, None);
                    }
                }
            }
            Targets::Collection(kinds, selector) => {
                let mut deleted = 0;
                for rt in kinds {
                    let pairs: Vec<(&str, &str)> = selector.iter().map(|s| ("labelSelector", s.as_str())).collect();
                    let path = resource_path(rt, Some(&namespace), None) + &query_string(&pairs);
                    let body = serde_json::to_vec(&options)?;
                    let response = client.send(Method::DELETE, &path, "application/json", body);
                    match response.await.and_then(|r| r.ok()) {
                        Ok(list) => {
                            let items = list.get("items").and_then(Value::as_array);
                            for item in items.into_iter().flatten() {
                                deleted += 1;
                                println!("{}", deleted_line(rt, meta_str(item, "name").unwrap_or("")));
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            report_error(&e.into(), None);
                        }
                    }
                }
                if deleted == 0 && failures == 0 {
                    eprintln!("No resources found");
                }
            }
        }
        finish(failures)
    }

    /// Deletes one object and prints kubectl's line for it.
    async fn delete_one(
        &self,
        client: &Client,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &Value,
    ) -> anyhow::Result<()> {
        let path = resource_path(rt, namespace, Some(name));
        let body = serde_json::to_vec(options)?;
        let response = client.send(Method::DELETE, &path, "application/json", body).await?;
        if self.ignore_not_found && is_not_found(&response) {
            return Ok(());
        }
        response.ok()?;
        println!("{}", deleted_line(rt, name));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> &'static ResourceType {
        flotilla_api::by_cli_name(name).expect("known kind")
    }

    fn args(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options_and_lines_like_kubectl() {
        assert_eq!(
            delete_options(Cascade::Foreground),
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"})
        );
        assert_eq!(deleted_line(kind("deploy"), "web"), "deployment.apps \"web\" deleted");
        assert_eq!(deleted_line(kind("cm"), "c"), "configmap \"c\" deleted");
    }

    /// A target list as text, to compare (kinds have no `PartialEq`).
    fn show(targets: Targets) -> String {
        match targets {
            Targets::Named(named) => {
                let names: Vec<String> = named.iter().map(|(rt, n)| format!("{}/{n}", rt.plural)).collect();
                names.join(" ")
            }
            Targets::Collection(kinds, selector) => {
                let kinds: Vec<&str> = kinds.iter().map(|rt| rt.plural).collect();
                format!("{} -l {}", kinds.join(","), selector.unwrap_or_else(|| "*".into()))
            }
        }
    }

    #[test]
    fn targets_from_the_command_line() -> anyhow::Result<()> {
        let parse = |a: &[&str], selector: Option<&str>, all| parse_targets(&args(a), selector, all).map(show);
        assert_eq!(parse(&["deploy", "a", "b"], None, false)?, "deployments/a deployments/b");
        assert_eq!(parse(&["pod/p", "svc/s"], None, false)?, "pods/p services/s");
        assert_eq!(parse(&["deploy,svc"], Some("app=web"), false)?, "deployments,services -l app=web");
        assert_eq!(parse(&["cm"], None, true)?, "configmaps -l *");
        assert!(parse(&["cm"], None, false).is_err());
        assert!(parse(&["cm", "x"], Some("a=b"), false).is_err());
        assert!(parse(&["widgets", "x"], None, false).is_err());
        assert!(parse(&[], None, false).is_err());
        Ok(())
    }
}

//! The ServiceAccounts controller (kube-controller-manager's `serviceaccount`): every
//! namespace that is not being deleted has a ServiceAccount named `default`, made again if
//! it is deleted. Flotilla issues no tokens for them: a ServiceAccount is an object that
//! manifests create and pods name (`serviceAccountName`), nothing more.

use crate::error::{Error, Result};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_api::Reason;
use flotilla_client::{Cluster, Informer, resource};
use serde_json::json;
use std::sync::Arc;

/// The ServiceAccount every namespace has.
const DEFAULT: &str = "default";

pub(crate) struct ServiceAccountsController {
    cluster: Arc<dyn Cluster>,
    namespaces: Informer,
    accounts: Informer,
}

impl ServiceAccountsController {
    pub(crate) async fn run(cluster: Arc<dyn Cluster>, namespaces: Informer, accounts: Informer, config: RunnerConfig) {
        let controller =
            Arc::new(ServiceAccountsController { cluster, namespaces: namespaces.clone(), accounts: accounts.clone() });
        let all: AllKeys<String> = {
            let namespaces = namespaces.clone();
            Arc::new(move || namespaces.list().iter().map(|ns| meta::name(ns).to_string()).collect())
        };
        let own: Mapper<String> = Arc::new(|ns, _| vec![meta::name(ns).to_string()]);
        let default_account: Mapper<String> = Arc::new(|account, _| {
            if meta::name(account) == DEFAULT { vec![meta::namespace(account).to_string()] } else { Vec::new() }
        });
        let namespace_of = {
            let namespaces = namespaces.clone();
            Arc::new(move |name: &String| namespaces.get("", name))
        };
        Controller::new("serviceaccount", all, config)
            .reports_failures_of(namespace_of, controller.cluster.clone())
            .watches(namespaces, own)
            .watches(accounts, default_account)
            .run(controller)
            .await;
    }
}

impl Reconciler<String> for ServiceAccountsController {
    async fn reconcile(&self, namespace: &String) -> Result<Action> {
        let Some(ns) = self.namespaces.get("", namespace) else { return Ok(Action::AwaitChange) };
        if meta::is_terminating(&ns) || self.accounts.get(namespace, DEFAULT).is_some() {
            return Ok(Action::AwaitChange);
        }
        let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT, "namespace": namespace}});
        match self.cluster.create(resource("v1", "ServiceAccount"), Some(namespace), &account).await {
            // Made meanwhile, or the namespace began to go: either way nothing to do.
            Ok(_) => Ok(Action::AwaitChange),
            Err(e) if matches!(e.reason, Reason::AlreadyExists | Reason::Forbidden) => Ok(Action::AwaitChange),
            Err(e) => Err(Error::api(format!("creating the default ServiceAccount of namespace {namespace}"), e)),
        }
    }
}

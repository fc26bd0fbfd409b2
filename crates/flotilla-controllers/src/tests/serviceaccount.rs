//! Every namespace has its `default` ServiceAccount, made again if it is deleted.

use super::*;

#[tokio::test]
async fn every_namespace_has_a_default_service_account() {
    let cluster = start_cluster().await;
    let mut config = test_config();
    config.select(&["serviceaccount".to_string()]).expect("a known controller");
    let _controller = AbortOnDrop(tokio::spawn(run(cluster.cluster.clone(), config)));
    let account_in = |namespace: &'static str| {
        let cluster = cluster.cluster.clone();
        async move { cluster.get(resource("v1", "ServiceAccount"), Some(namespace), "default").await.ok() }
    };

    // The namespaces the server starts with, and one made later.
    let first = wait_for("the default namespace's ServiceAccount", || account_in("default")).await;
    wait_for("kube-system's ServiceAccount", || account_in("kube-system")).await;
    let shop = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    cluster.cluster.create(resource("v1", "Namespace"), None, &shop).await.expect("created");
    wait_for("shop's ServiceAccount", || account_in("shop")).await;

    // Deleted, it is made again: a new object.
    delete(&cluster, "v1", "ServiceAccount", "default", None).await;
    let again = wait_for("the default ServiceAccount made again", || async {
        account_in("default").await.filter(|account| account["metadata"]["uid"] != first["metadata"]["uid"])
    })
    .await;
    assert_eq!(again["metadata"]["namespace"], "default");
    let all = list(cluster.cluster.as_ref(), "v1", "ServiceAccount").await;
    assert_eq!(all.len(), 1, "one default ServiceAccount: {all:?}");
}

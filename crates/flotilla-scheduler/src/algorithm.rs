//! The scheduling decision, pure: which nodes a pod fits ([`filter`]), which of them is
//! best ([`score`]), and the node or the reasons none fits ([`schedule`]).
//!
//! The filters are kube-scheduler's default ones that Flotilla's pods need, in its order:
//! NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector and required node
//! affinity), NodeResourcesFit. The score is NodeResourcesFit's `LeastAllocated` or
//! `MostAllocated` strategy on CPU and memory, equally weighted.

use crate::Scoring;
use crate::model::{NO_SCHEDULE, NodeInfo, NodeUsage, PodInfo, TAINT_UNSCHEDULABLE};
use flotilla_api::k8s_openapi::api::core::v1::{NodeSelector, Taint, Toleration};
use std::collections::HashMap;
use std::fmt;

/// The highest score a node gets.
const MAX_NODE_SCORE: i64 = 100;

/// Why a pod does not fit a node, worded as kube-scheduler words it (the reasons of all
/// nodes are counted into one message).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Unfit {
    /// `spec.unschedulable` and the pod does not tolerate it.
    NodeUnschedulable,
    /// A `NoSchedule` or `NoExecute` taint the pod does not tolerate.
    UntoleratedTaint { key: String, value: String },
    /// `nodeSelector` or required node affinity.
    NodeAffinity,
    /// The node runs as many pods as it allows.
    TooManyPods,
    /// Not enough of resource (`cpu`, `memory`, …) left.
    Insufficient(String),
    /// The node's `status.allocatable` cannot be read.
    InvalidAllocatable,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::NodeUnschedulable => f.write_str("node(s) were unschedulable"),
            Unfit::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Unfit::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Unfit::TooManyPods => f.write_str("Too many pods"),
            Unfit::Insufficient(resource) => write!(f, "Insufficient {resource}"),
            Unfit::InvalidAllocatable => f.write_str("node(s) had an unreadable status.allocatable"),
        }
    }
}

/// No node fits the pod: the message says why, node by node (counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unschedulable {
    pub message: String,
}

/// Kubernetes' `ToleratesTaint`.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "" | "Equal" => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Required node affinity against one node (the rules live in flotilla-api, shared with
/// the DaemonSet controller).
fn node_selector_matches(selector: &NodeSelector, node: &NodeInfo) -> bool {
    flotilla_api::node_selector_matches(selector, &node.name, |key| node.labels.get(key).map(String::as_str))
}

/// Whether `pod` may run on `node` beside the pods `usage` counts; if not, why (several
/// reasons only for resources, as kube-scheduler stops at the first failing filter).
pub(crate) fn filter(pod: &PodInfo, node: &NodeInfo, usage: &NodeUsage) -> Result<(), Vec<Unfit>> {
    // NodeUnschedulable
    if node.unschedulable {
        let cordon = Taint { key: TAINT_UNSCHEDULABLE.into(), effect: NO_SCHEDULE.into(), ..Taint::default() };
        if !tolerated(&pod.tolerations, &cordon) {
            return Err(vec![Unfit::NodeUnschedulable]);
        }
    }
    // TaintToleration (the node keeps only NoSchedule and NoExecute taints)
    if let Some(taint) = node.taints.iter().find(|t| !tolerated(&pod.tolerations, t)) {
        let value = taint.value.clone().unwrap_or_default();
        return Err(vec![Unfit::UntoleratedTaint { key: taint.key.clone(), value }]);
    }
    // NodeAffinity
    let selector_matches = pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v));
    if !selector_matches || pod.required_affinity.as_ref().is_some_and(|s| !node_selector_matches(s, node)) {
        return Err(vec![Unfit::NodeAffinity]);
    }
    // NodeResourcesFit
    let Ok(allocatable) = &node.allocatable else { return Err(vec![Unfit::InvalidAllocatable]) };
    let mut unfit = Vec::new();
    if usage.pods.saturating_add(1) > allocatable.pods {
        unfit.push(Unfit::TooManyPods);
    }
    let wanted = &pod.requests.resources;
    let (free, used) = (&allocatable.resources, &usage.requested);
    let short = |want: i64, have: i64, used: i64| want > 0 && want > have.saturating_sub(used);
    if short(wanted.milli_cpu, free.milli_cpu, used.milli_cpu) {
        unfit.push(Unfit::Insufficient("cpu".into()));
    }
    if short(wanted.memory, free.memory, used.memory) {
        unfit.push(Unfit::Insufficient("memory".into()));
    }
    if short(wanted.ephemeral_storage, free.ephemeral_storage, used.ephemeral_storage) {
        unfit.push(Unfit::Insufficient("ephemeral-storage".into()));
    }
    for (name, want) in &wanted.scalar {
        let have = free.scalar.get(name).copied().unwrap_or(0);
        if short(*want, have, used.scalar.get(name).copied().unwrap_or(0)) {
            unfit.push(Unfit::Insufficient(name.clone()));
        }
    }
    if unfit.is_empty() { Ok(()) } else { Err(unfit) }
}

/// NodeResourcesFit's per-resource scores, 0 to 100.
fn resource_score(scoring: Scoring, requested: i64, capacity: i64) -> i64 {
    if capacity <= 0 {
        return 0;
    }
    // i128: `requested * 100` must not overflow for exabyte-sized nodes.
    let (requested, capacity) = (i128::from(requested), i128::from(capacity));
    let score = match scoring {
        Scoring::LeastAllocated if requested > capacity => 0,
        Scoring::LeastAllocated => (capacity - requested) * i128::from(MAX_NODE_SCORE) / capacity,
        Scoring::MostAllocated => requested.min(capacity) * i128::from(MAX_NODE_SCORE) / capacity,
    };
    i64::try_from(score).unwrap_or(0)
}

/// How good a place `node` is for `pod` (0 to 100): CPU and memory, equally weighted, as
/// they would be with the pod placed, counting requests with kube-scheduler's defaults
/// for containers that set none.
pub(crate) fn score(pod: &PodInfo, node: &NodeInfo, usage: &NodeUsage, scoring: Scoring) -> i64 {
    let Ok(allocatable) = &node.allocatable else { return 0 };
    let cpu = usage.non_zero_milli_cpu.saturating_add(pod.requests.non_zero_milli_cpu);
    let memory = usage.non_zero_memory.saturating_add(pod.requests.non_zero_memory);
    (resource_score(scoring, cpu, allocatable.resources.milli_cpu)
        + resource_score(scoring, memory, allocatable.resources.memory))
        / 2
}

/// The node for `pod` among `nodes` (with what their pods use): the best score among
/// those it fits, ties going to the node with fewest pods, then to the first name.
/// Otherwise the reasons, as kube-scheduler's message: `0/3 nodes are available: 1
/// Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.`
pub(crate) fn schedule<'a>(
    pod: &PodInfo,
    nodes: impl IntoIterator<Item = (&'a NodeInfo, &'a NodeUsage)>,
    scoring: Scoring,
) -> Result<&'a str, Unschedulable> {
    let mut best: Option<(i64, i64, &'a str)> = None;
    let mut reasons: HashMap<Unfit, usize> = HashMap::new();
    let mut count = 0usize;
    for (node, usage) in nodes {
        count += 1;
        match filter(pod, node, usage) {
            Ok(()) => {
                let score = score(pod, node, usage, scoring);
                let better = match best {
                    None => true,
                    Some((s, pods, name)) => {
                        (score, -usage.pods, std::cmp::Reverse(node.name.as_str()))
                            > (s, -pods, std::cmp::Reverse(name))
                    }
                };
                if better {
                    best = Some((score, usage.pods, node.name.as_str()));
                }
            }
            Err(unfit) => unfit.into_iter().for_each(|reason| *reasons.entry(reason).or_default() += 1),
        }
    }
    if let Some((_, _, name)) = best {
        return Ok(name);
    }
    if count == 0 {
        return Err(Unschedulable { message: "no nodes available to schedule pods".into() });
    }
    Err(Unschedulable { message: unschedulable_message(count, &reasons) })
}

/// Kubernetes' `FitError` text: each reason with its node count, sorted as strings.
fn unschedulable_message(nodes: usize, reasons: &HashMap<Unfit, usize>) -> String {
    let mut counted: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    // Whole strings, as Go's `sort.Strings`: each reason is once in the map, so the
    // message does not depend on the hash order.
    counted.sort();
    format!("0/{nodes} nodes are available: {}.", counted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Allocatable, Requests, Resources, TAINT_NOT_READY};
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: BTreeMap::new(),
            unschedulable: false,
            taints: Vec::new(),
            allocatable: Ok(Allocatable {
                resources: Resources { milli_cpu: 4000, memory: 8 << 30, ..Resources::default() },
                pods: 110,
            }),
        }
    }

    fn labelled(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
        NodeInfo { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..node(name) }
    }

    fn pod(spec: Value) -> PodInfo {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
        }
        PodInfo::of(&json!({"metadata": {"name": "p"}, "spec": spec})).expect("a valid pod")
    }

    fn requesting(cpu: &str, memory: &str) -> PodInfo {
        pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}),
        )
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint { key: key.into(), value: Some(value.into()), effect: effect.into(), ..Taint::default() }
    }

    fn fits(pod: &PodInfo, node: &NodeInfo) -> Result<(), Vec<Unfit>> {
        filter(pod, node, &NodeUsage::default())
    }

    #[test]
    fn cordoned_nodes_take_only_pods_that_tolerate_it() {
        let cordoned = NodeInfo { unschedulable: true, ..node("n") };
        assert_eq!(fits(&pod(json!({})), &cordoned), Err(vec![Unfit::NodeUnschedulable]));
        let tolerant =
            pod(json!({"tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(fits(&tolerant, &cordoned), Ok(()));
    }

    #[test]
    fn untolerated_no_schedule_and_no_execute_taints_keep_pods_off() {
        for effect in ["NoSchedule", "NoExecute"] {
            let tainted = NodeInfo { taints: vec![taint("gpu", "true", effect)], ..node("n") };
            let expected = Unfit::UntoleratedTaint { key: "gpu".into(), value: "true".into() };
            assert_eq!(fits(&pod(json!({})), &tainted), Err(vec![expected]));
        }
    }

    #[test]
    fn tolerations_match_by_key_operator_value_and_effect() {
        let tainted = NodeInfo { taints: vec![taint("gpu", "true", "NoSchedule")], ..node("n") };
        let cases = [
            (json!({"key": "gpu", "operator": "Equal", "value": "true"}), true),
            (json!({"key": "gpu", "value": "true"}), true),
            (json!({"key": "gpu", "operator": "Equal", "value": "false"}), false),
            (json!({"key": "gpu", "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "other", "operator": "Exists"}), false),
            (json!({"key": "gpu", "operator": "Sometimes"}), false),
        ];
        for (toleration, ok) in cases {
            let p = pod(json!({"tolerations": [toleration.clone()]}));
            assert_eq!(fits(&p, &tainted).is_ok(), ok, "{toleration}");
        }
    }

    #[test]
    fn not_ready_nodes_fail_as_their_taint_unless_tolerated() {
        let not_ready = NodeInfo {
            taints: vec![Taint { key: TAINT_NOT_READY.into(), effect: "NoSchedule".into(), ..Taint::default() }],
            ..node("n")
        };
        let empty = NodeUsage::default();
        let result = schedule(&pod(json!({})), [(&not_ready, &empty)], Scoring::LeastAllocated);
        let message = result.expect_err("not ready").message;
        assert_eq!(
            message,
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }."
        );
        let daemon = pod(json!({"tolerations": [{"key": TAINT_NOT_READY, "operator": "Exists"}]}));
        assert_eq!(fits(&daemon, &not_ready), Ok(()));
    }

    #[test]
    fn node_selector_needs_every_label() {
        let n = labelled("n", &[("disk", "ssd"), ("zone", "a")]);
        assert_eq!(fits(&pod(json!({"nodeSelector": {"disk": "ssd"}})), &n), Ok(()));
        assert_eq!(fits(&pod(json!({"nodeSelector": {"disk": "ssd", "zone": "a"}})), &n), Ok(()));
        assert_eq!(fits(&pod(json!({"nodeSelector": {"disk": "hdd"}})), &n), Err(vec![Unfit::NodeAffinity]));
        assert_eq!(fits(&pod(json!({"nodeSelector": {"gpu": "yes"}})), &n), Err(vec![Unfit::NodeAffinity]));
    }

    fn affinity(terms: Value) -> PodInfo {
        pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
        )
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
        json!({"key": key, "operator": operator, "values": values})
    }

    #[test]
    fn node_affinity_operators() {
        let n = labelled("n", &[("zone", "a"), ("cores", "8")]);
        let cases = [
            (expr("zone", "In", &["a", "b"]), true),
            (expr("zone", "In", &["b"]), false),
            (expr("zone", "In", &[]), false),
            (expr("zone", "NotIn", &["b"]), true),
            (expr("zone", "NotIn", &["a"]), false),
            (expr("missing", "NotIn", &["a"]), true),
            (expr("zone", "Exists", &[]), true),
            (expr("missing", "Exists", &[]), false),
            (expr("zone", "Exists", &["a"]), false),
            (expr("missing", "DoesNotExist", &[]), true),
            (expr("zone", "DoesNotExist", &[]), false),
            (expr("cores", "Gt", &["4"]), true),
            (expr("cores", "Gt", &["8"]), false),
            (expr("cores", "Lt", &["16"]), true),
            (expr("cores", "Lt", &["8"]), false),
            (expr("zone", "Gt", &["1"]), false),
            (expr("cores", "Gt", &["x"]), false),
            (expr("cores", "Gt", &["1", "2"]), false),
            (expr("missing", "Lt", &["1"]), false),
            (expr("zone", "Near", &["a"]), false),
        ];
        for (requirement, ok) in cases {
            let p = affinity(json!([{"matchExpressions": [requirement.clone()]}]));
            assert_eq!(fits(&p, &n).is_ok(), ok, "{requirement}");
        }
    }

    #[test]
    fn node_affinity_ors_terms_and_ands_requirements() {
        let n = labelled("n", &[("zone", "a"), ("disk", "ssd")]);
        let both = json!([{"matchExpressions": [expr("zone", "In", &["a"]), expr("disk", "In", &["ssd"])]}]);
        assert_eq!(fits(&affinity(both), &n), Ok(()));
        let one_fails = json!([{"matchExpressions": [expr("zone", "In", &["a"]), expr("disk", "In", &["hdd"])]}]);
        assert_eq!(fits(&affinity(one_fails), &n), Err(vec![Unfit::NodeAffinity]));
        let second_term = json!([{"matchExpressions": [expr("zone", "In", &["b"])]}, {"matchExpressions": [expr("disk", "Exists", &[])]}]);
        assert_eq!(fits(&affinity(second_term), &n), Ok(()));
        assert_eq!(fits(&affinity(json!([{}])), &n), Err(vec![Unfit::NodeAffinity]), "an empty term matches nothing");
        assert_eq!(fits(&affinity(json!([])), &n), Err(vec![Unfit::NodeAffinity]), "no term matches nothing");
        // Selector and affinity must both hold.
        let mut both_kinds = affinity(json!([{"matchExpressions": [expr("zone", "In", &["a"])]}]));
        both_kinds.node_selector.insert("disk".into(), "hdd".into());
        assert_eq!(fits(&both_kinds, &n), Err(vec![Unfit::NodeAffinity]));
    }

    #[test]
    fn node_affinity_match_fields_on_the_node_name() {
        let n = node("worker-1");
        let by_name = |op: &str, name: &str| affinity(json!([{"matchFields": [expr("metadata.name", op, &[name])]}]));
        assert_eq!(fits(&by_name("In", "worker-1"), &n), Ok(()));
        assert!(fits(&by_name("In", "worker-2"), &n).is_err());
        assert_eq!(fits(&by_name("NotIn", "worker-2"), &n), Ok(()));
        assert!(fits(&by_name("NotIn", "worker-1"), &n).is_err());
        let exists = affinity(json!([{"matchFields": [expr("metadata.name", "Exists", &[])]}]));
        assert!(fits(&exists, &n).is_err(), "fields take only In and NotIn");
    }

    #[test]
    fn resources_must_fit_what_is_left() {
        let n = node("n");
        let used = NodeUsage {
            requested: Resources { milli_cpu: 3500, memory: 1 << 30, ..Resources::default() },
            pods: 3,
            ..NodeUsage::default()
        };
        assert_eq!(filter(&requesting("500m", "1Gi"), &n, &used), Ok(()));
        assert_eq!(filter(&requesting("501m", "1Gi"), &n, &used), Err(vec![Unfit::Insufficient("cpu".into())]));
        assert_eq!(
            filter(&requesting("1", "8Gi"), &n, &used),
            Err(vec![Unfit::Insufficient("cpu".into()), Unfit::Insufficient("memory".into())])
        );
    }

    #[test]
    fn the_pod_count_is_a_resource() {
        let full = NodeUsage { pods: 110, ..NodeUsage::default() };
        assert_eq!(filter(&pod(json!({})), &node("n"), &full), Err(vec![Unfit::TooManyPods]));
        let no_pods = NodeInfo { allocatable: Ok(Allocatable::default()), ..node("n") };
        assert_eq!(fits(&pod(json!({})), &no_pods), Err(vec![Unfit::TooManyPods]));
    }

    #[test]
    fn zero_requests_fit_a_full_node() {
        let full = NodeUsage {
            requested: Resources { milli_cpu: 4000, memory: 8 << 30, ..Resources::default() },
            ..NodeUsage::default()
        };
        assert_eq!(filter(&pod(json!({})), &node("n"), &full), Ok(()));
    }

    #[test]
    fn extended_resources_and_ephemeral_storage_are_checked() {
        let mut n = node("n");
        if let Ok(a) = &mut n.allocatable {
            a.resources.scalar.insert("example.com/gpu".into(), 1);
            a.resources.ephemeral_storage = 1 << 30;
        }
        let gpu = |count: &str| {
            pod(
                json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"example.com/gpu": count}}}]}),
            )
        };
        assert_eq!(fits(&gpu("1"), &n), Ok(()));
        assert_eq!(fits(&gpu("2"), &n), Err(vec![Unfit::Insufficient("example.com/gpu".into())]));
        assert_eq!(fits(&gpu("1"), &node("plain")), Err(vec![Unfit::Insufficient("example.com/gpu".into())]));
        let disk = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"ephemeral-storage": "2Gi"}}}]}),
        );
        assert_eq!(fits(&disk, &n), Err(vec![Unfit::Insufficient("ephemeral-storage".into())]));
    }

    #[test]
    fn a_node_with_unreadable_allocatable_fits_nothing() {
        let broken = NodeInfo { allocatable: Err("bad".into()), ..node("n") };
        assert_eq!(fits(&pod(json!({})), &broken), Err(vec![Unfit::InvalidAllocatable]));
        assert_eq!(score(&pod(json!({})), &broken, &NodeUsage::default(), Scoring::LeastAllocated), 0);
    }

    #[test]
    fn filters_stop_at_the_first_failure_in_kubernetes_order() {
        let everything_wrong = NodeInfo {
            unschedulable: true,
            taints: vec![taint("t", "v", "NoSchedule")],
            allocatable: Ok(Allocatable::default()),
            ..node("n")
        };
        let p = pod(json!({"nodeSelector": {"a": "b"}}));
        assert_eq!(fits(&p, &everything_wrong), Err(vec![Unfit::NodeUnschedulable]));
    }

    fn usage(milli_cpu: i64, memory: i64, pods: i64) -> NodeUsage {
        NodeUsage { non_zero_milli_cpu: milli_cpu, non_zero_memory: memory, pods, ..NodeUsage::default() }
    }

    #[test]
    fn least_allocated_scores_free_share() {
        let n = node("n");
        let p = requesting("1", "2Gi");
        // cpu: (4000-1000)*100/4000 = 75; memory: (8-2)*100/8 = 75.
        assert_eq!(score(&p, &n, &usage(0, 0, 0), Scoring::LeastAllocated), 75);
        // cpu: (4000-3000)*100/4000 = 25; memory: (8-4)*100/8 = 50 → 37.
        assert_eq!(score(&p, &n, &usage(2000, 2 << 30, 1), Scoring::LeastAllocated), 37);
        // Over capacity scores 0 for that resource.
        assert_eq!(score(&p, &n, &usage(8000, 0, 1), Scoring::LeastAllocated), 37);
    }

    #[test]
    fn most_allocated_scores_used_share() {
        let n = node("n");
        let p = requesting("1", "2Gi");
        assert_eq!(score(&p, &n, &usage(0, 0, 0), Scoring::MostAllocated), 25);
        assert_eq!(score(&p, &n, &usage(2000, 2 << 30, 1), Scoring::MostAllocated), 62);
        // Capped at the capacity.
        assert_eq!(score(&p, &n, &usage(8000, 6 << 30, 1), Scoring::MostAllocated), 100);
    }

    #[test]
    fn scores_count_default_requests_for_pods_without_any() {
        let n = node("n");
        let p = pod(json!({}));
        // 100m of 4 cores: 97; 200Mi of 8Gi: 97.
        assert_eq!(score(&p, &n, &usage(0, 0, 0), Scoring::LeastAllocated), 97);
    }

    #[test]
    fn least_allocated_spreads_and_most_allocated_packs() {
        let (a, b) = (node("a"), node("b"));
        let busy = usage(2000, 4 << 30, 2);
        let idle = usage(0, 0, 0);
        let p = requesting("500m", "1Gi");
        let nodes = [(&a, &busy), (&b, &idle)];
        assert_eq!(schedule(&p, nodes, Scoring::LeastAllocated), Ok("b"));
        assert_eq!(schedule(&p, nodes, Scoring::MostAllocated), Ok("a"));
    }

    #[test]
    fn ties_go_to_fewest_pods_then_name() {
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let p = pod(json!({}));
        let two = NodeUsage { pods: 2, ..NodeUsage::default() };
        let one = NodeUsage { pods: 1, ..NodeUsage::default() };
        assert_eq!(schedule(&p, [(&a, &two), (&b, &one), (&c, &one)], Scoring::LeastAllocated), Ok("b"));
        assert_eq!(schedule(&p, [(&c, &one), (&b, &one), (&a, &two)], Scoring::LeastAllocated), Ok("b"));
    }

    #[test]
    fn unschedulable_message_counts_reasons_per_node() {
        let small = NodeInfo {
            allocatable: Ok(Allocatable {
                resources: Resources { milli_cpu: 100, memory: 8 << 30, ..Resources::default() },
                pods: 10,
            }),
            ..node("small")
        };
        let (x, y) = (labelled("x", &[("zone", "b")]), labelled("y", &[]));
        let p = pod(json!({
            "nodeSelector": {"zone": "b"},
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
        }));
        let small = NodeInfo { labels: [("zone".to_string(), "b".to_string())].into(), ..small };
        let empty = NodeUsage::default();
        let full =
            NodeUsage { requested: Resources { milli_cpu: 4000, ..Resources::default() }, ..NodeUsage::default() };
        let message = schedule(&p, [(&small, &empty), (&x, &full), (&y, &empty)], Scoring::LeastAllocated)
            .expect_err("nothing fits")
            .message;
        assert_eq!(
            message,
            "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 Insufficient cpu."
        );
    }

    #[test]
    fn no_nodes_at_all() {
        let none: [(&NodeInfo, &NodeUsage); 0] = [];
        let message = schedule(&pod(json!({})), none, Scoring::LeastAllocated).expect_err("no nodes").message;
        assert_eq!(message, "no nodes available to schedule pods");
    }

    #[test]
    fn the_message_is_stable_across_calls() {
        let nodes: Vec<NodeInfo> =
            (0..20).map(|i| labelled(&format!("n{i}"), &[("i", if i % 2 == 0 { "even" } else { "odd" })])).collect();
        let tainted: Vec<NodeInfo> = (0..5)
            .map(|i| NodeInfo { taints: vec![taint("k", &i.to_string(), "NoSchedule")], ..node(&format!("t{i}")) })
            .collect();
        let empty = NodeUsage::default();
        let p = pod(json!({"nodeSelector": {"i": "none"}}));
        let all = || nodes.iter().chain(&tainted).map(|n| (n, &empty));
        let first = schedule(&p, all(), Scoring::LeastAllocated).expect_err("nothing fits").message;
        for _ in 0..10 {
            assert_eq!(schedule(&p, all(), Scoring::LeastAllocated).expect_err("nothing fits").message, first);
        }
        assert!(first.starts_with("0/25 nodes are available: 1 node(s) had untolerated taint {k: 0}, "), "{first}");
        assert!(first.ends_with("20 node(s) didn't match Pod's node affinity/selector."), "{first}");
    }

    #[test]
    fn a_hand_built_pod_is_filtered_like_a_parsed_one() {
        let p = PodInfo {
            requests: Requests {
                resources: Resources { milli_cpu: 5000, ..Resources::default() },
                ..Requests::default()
            },
            ..PodInfo::default()
        };
        assert_eq!(fits(&p, &node("n")), Err(vec![Unfit::Insufficient("cpu".into())]));
    }
}

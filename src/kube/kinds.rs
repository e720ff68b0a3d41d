//! The Kinds of the resources the hub names without having seen one of their objects.

/// The Kind of common resources (`pods` → `Pod`): for empty offline lists, and the objects of
/// lists, whose items carry none.
pub fn kind_of(resource: &str) -> Option<&'static str> {
    Some(match resource {
        "pods" => "Pod",
        "nodes" => "Node",
        "services" => "Service",
        "endpoints" => "Endpoints",
        "endpointslices" => "EndpointSlice",
        "configmaps" => "ConfigMap",
        "secrets" => "Secret",
        "namespaces" => "Namespace",
        "events" => "Event",
        "leases" => "Lease",
        "serviceaccounts" => "ServiceAccount",
        "persistentvolumes" => "PersistentVolume",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "runtimeclasses" => "RuntimeClass",
        "csidrivers" => "CSIDriver",
        "csinodes" => "CSINode",
        "storageclasses" => "StorageClass",
        "volumeattachments" => "VolumeAttachment",
        "nodepools" => "NodePool",
        "deployments" => "Deployment",
        "daemonsets" => "DaemonSet",
        "replicasets" => "ReplicaSet",
        "statefulsets" => "StatefulSet",
        "networkpolicies" => "NetworkPolicy",
        "ingresses" => "Ingress",
        _ => return None,
    })
}

// Builds prometheus-adapter (the custom.metrics.k8s.io server of the autoscaling tests) at one pinned
// release. A module of our own because `go install ...@version` asks the proxy for the module's version
// list (deprecation check), which the proxy here refuses; a pinned require never asks.
module modelserve.io/hack/cluster/adapter

go 1.22.1

require sigs.k8s.io/prometheus-adapter v0.12.0

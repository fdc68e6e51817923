// Builds kube-state-metrics (Deployment and HPA replica series for the chart's Grafana dashboard) at
// one pinned release, for the local cluster's Prometheus. A module of our own for the same reason as
// hack/cluster/adapter: a pinned require never asks the proxy for a version list.
module modelserve.io/hack/cluster/kube-state-metrics

go 1.23.0

require k8s.io/kube-state-metrics/v2 v2.15.0

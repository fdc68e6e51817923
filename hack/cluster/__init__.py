"""The local Kubernetes test cluster: real control plane built from Go modules, nodes simulated by kwok."""

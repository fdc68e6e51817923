"""Pod discovery for the local cluster's Prometheus, written as file_sd targets.

Debian's Prometheus is built without its Kubernetes service discovery, so this small loop does what
`kubernetes_sd_configs: [{role: pod}]` plus the usual annotation relabelling would: every running pod
on the real node annotated `prometheus.io/scrape: "true"` becomes a target `<podIP>:<prometheus.io/port>`
with `__metrics_path__` from `prometheus.io/path` and the `namespace` and `pod` labels the chart's
prometheus-adapter rules map to resources. It writes the file atomically every `--interval` seconds.

    python -m hack.cluster.podsd --kubectl K --kubeconfig C --node N --out targets.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """file_sd target groups for the scrapeable pods among `pods` (a pure function: tested)."""
    out = []
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        notes = meta.get("annotations") or {}
        if notes.get("prometheus.io/scrape") != "true" or status.get("phase") != "Running":
            continue
        if meta.get("deletionTimestamp") or not status.get("podIP") or not notes.get("prometheus.io/port"):
            continue
        out.append({"targets": [f"{status['podIP']}:{notes['prometheus.io/port']}"],
                    "labels": {"namespace": meta.get("namespace", ""), "pod": meta.get("name", ""),
                               "__metrics_path__": notes.get("prometheus.io/path", "/metrics")}})
    return sorted(out, key=lambda t: t["targets"][0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.cluster.podsd", description=__doc__)
    parser.add_argument("--kubectl", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    while True:
        proc = subprocess.run([args.kubectl, f"--kubeconfig={args.kubeconfig}", "get", "pods", "-A",
                               f"--field-selector=spec.nodeName={args.node}", "-o", "json"],
                              capture_output=True, text=True, check=False, timeout=30)
        if proc.returncode == 0:
            groups = targets(json.loads(proc.stdout).get("items", []))
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(groups, indent=1))
            os.replace(tmp, args.out)
        else:
            print(f"podsd: kubectl failed: {proc.stderr.strip()}", file=sys.stderr, flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())

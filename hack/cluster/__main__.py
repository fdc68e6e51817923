"""`python -m hack.cluster up|down|env|status|prune`: the local test cluster from the command line.

`make cluster-up` / `make cluster-down` call this; the e2e test fixture does too, so the tests and a
developer's terminal manage the same cluster the same way.
"""

from __future__ import annotations

import argparse
import sys

from hack.cluster.local import DEFAULT_NAME, ClusterError, Layout, down, env_lines, healthy, prune, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env", "status", "prune"],
                        help="prune: delete clusters of test sessions (<name>-p<pid>) whose process is gone")
    parser.add_argument("--name", default=DEFAULT_NAME, help="cluster name (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds to wait for each component's health when quiet (scaled by load)")
    parser.add_argument("--no-real-node", action="store_true",
                        help="control plane and fake nodes only (also: MODELSERVE_REAL_NODE=0)")
    args = parser.parse_args(argv)
    layout = Layout.default(args.name, real_node=False if args.no_real_node else None)
    try:
        if args.command == "up":
            created = up(layout, timeout=args.timeout)
            if not created:
                print(f"cluster {layout.name}: already up; KUBECONFIG={layout.kubeconfig}")
        elif args.command == "down":
            down(layout)
            print(f"cluster {layout.name}: down")
        elif args.command == "prune":
            for name in prune(layout):
                print(f"cluster {name}: pruned (its test session is gone)")
        elif args.command == "env":
            print("\n".join(env_lines(layout)))
        else:
            ok = healthy(layout)
            print(f"cluster {layout.name}: {'healthy' if ok else 'not running'}")
            return 0 if ok else 1
    except ClusterError as exc:
        print(f"hack.cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

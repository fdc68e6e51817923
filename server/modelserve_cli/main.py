"""The one ``modelserve`` command.

Each subcommand imports its side lazily, so the operator image (no ONNX Runtime) and the
server image (no kopf) both carry this same entry point and only their own dependencies.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, function, one-line help). The module is imported only when used.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("modelserve_server.cli", "serve_main", "run the inference server (Open Inference Protocol V2)"),
    "fetch": ("modelserve_server.cli", "fetch_main", "fetch a model URI into a directory (init container)"),
    "operator": ("modelserve_operator.cli", "operator_main", "run the Kubernetes operator (kopf)"),
    "crd": ("modelserve_operator.cli", "crd_main", "print the generated ModelDeployment CRD"),
}


def _usage() -> str:
    lines = ["usage: modelserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, _, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"modelserve: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name, _ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    result = getattr(module, func_name)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

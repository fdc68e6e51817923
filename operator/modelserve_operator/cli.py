"""Command-line entry points of the operator side of ``modelserve``.

``modelserve crd`` prints the CustomResourceDefinition generated from the typed model
(:mod:`modelserve_operator.crd`); ``modelserve operator`` runs the kopf operator. Both import
their dependencies lazily: printing the CRD needs neither kopf nor a cluster.
"""

from __future__ import annotations

import argparse
import sys


def crd_main(argv: list[str]) -> int:
    """``modelserve crd [--output FILE]``: print the ModelDeployment CRD as YAML."""
    parser = argparse.ArgumentParser(
        prog="modelserve crd",
        description="Print the ModelDeployment CustomResourceDefinition generated from the typed model.",
    )
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    parser.add_argument(
        "--no-header", action="store_true", help="leave out the 'generated, do not edit' comment"
    )
    args = parser.parse_args(argv)

    from modelserve_operator.crd import render_crd_yaml

    text = render_crd_yaml(header=not args.no_header)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def operator_main(argv: list[str]) -> int:
    """``modelserve operator ...``: run the kopf operator (see :mod:`modelserve_operator.main`)."""
    import importlib

    main = importlib.import_module("modelserve_operator.main")
    return int(main.run(argv) or 0)

"""Builds the AWS SDK data the service ships: botocore's own, for only the services it calls.

Run at build time: `make sdk-models` writes it to sdk_models/ beside this module from the installed
botocore (the layer's pin), and core/aws.py reads every client's models from there; a test holds the copy
to botocore. A first client would otherwise list botocore's some 440 service folders, parse endpoints.json
with every service of every partition, and decompress and parse its service's model with all its
documentation: most of 40 ms per client of a cold start. The copy holds, for each service in
aws.SERVICES, every API version's model (all operations and shapes) without their documentation,
its endpoint rule set, paginators, waiters and extras as botocore has them; and botocore's partitions,
retry and default-configuration data unchanged, with endpoints.json keeping only those services.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from oauth_connections.core.aws import SDK_MODELS, SERVICES

ROOT_FILES = ("_retry.json", "partitions.json", "sdk-default-configuration.json")
# Read only to write a client's docstrings; not shipped.
UNSHIPPED = ("examples-1.json",)


def botocore_data() -> Path:
    import botocore.loaders

    return Path(botocore.loaders.Loader.BUILTIN_DATA_PATH)


def build(source: Path, target: Path) -> None:
    """Writes the shipped copy of botocore's data in `source` to `target` (emptied first)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ROOT_FILES:
        shutil.copyfile(source / name, target / name)
    endpoints = json.loads((source / "endpoints.json").read_text())
    for partition in endpoints["partitions"]:
        partition["services"] = {name: data for name, data in partition["services"].items() if name in SERVICES}
    _write_json(target / "endpoints.json", endpoints)
    for service in SERVICES:
        for version in sorted(path for path in (source / service).iterdir() if path.is_dir()):
            destination = target / service / version.name
            destination.mkdir(parents=True)
            for file in sorted(version.iterdir()):
                if file.name in UNSHIPPED:
                    continue
                if file.name == "service-2.json.gz":
                    _write_json(destination / "service-2.json", _model_without_documentation(_read_json(file)))
                else:
                    shutil.copyfile(file, destination / file.name)


def _read_json(path: Path) -> Any:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(data)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n")


def _model_without_documentation(model: dict[str, Any]) -> dict[str, Any]:
    """The service model without the documentation of the service, its operations and shapes, which
    botocore reads only for docstrings (the documentation of client context parameters it requires)."""
    documented = ("operations", "shapes")
    stripped = {key: _without_documentation(value) if key in documented else value for key, value in model.items()}
    stripped.pop("documentation", None)
    return stripped


def _without_documentation(node: Any) -> Any:
    """`node` without documentation strings (a member named "documentation" is a shape reference, kept)."""
    if isinstance(node, dict):
        return {
            key: _without_documentation(value)
            for key, value in node.items()
            if not (key in ("documentation", "documentationUrl") and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_without_documentation(item) for item in node]
    return node


def main() -> int:
    build(botocore_data(), SDK_MODELS)
    print(f"wrote {SDK_MODELS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

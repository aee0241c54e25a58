"""The template's functions as local execution-environment definitions (code, layers, env, limits)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack import config
from devstack.aws import Provisioner
from devstack.iam import access_key_for
from devstack.runtime import FunctionSpec, reserved_environment
from devstack.template import TemplateError, function_properties, resources_of_type, to_string

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
LAYER_TYPES = ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion")


def build_functions(
    template: Mapping[str, Any],
    provisioner: Provisioner,
    *,
    template_dir: Path,
    state_dir: Path,
    fields: Mapping[str, str],
    env_overrides: Mapping[str, str],
    function_env_overrides: Mapping[str, Mapping[str, str]],
    warnings: list[str],
) -> dict[str, FunctionSpec]:
    """FunctionSpecs with their complete worker environment.

    Environment, lowest to highest precedence: the variables Lambda reserves, the template's
    (Globals merged with the function's), ``config.LOCAL_ENV_OVERRIDES``, ``env_overrides``,
    ``function_env_overrides[logical_id]``.
    """
    resolver = provisioner.resolver
    layer_dirs: dict[str, list[Path]] = {}
    for logical_id, resource in resources_of_type(template, *LAYER_TYPES):
        if not provisioner.active(resource):
            continue
        properties = resource.get("Properties") or {}
        content = properties.get("ContentUri", properties.get("Content"))
        if isinstance(content, str):
            root = (template_dir / content).resolve()
            layer_dirs[str(provisioner.attribute(logical_id, None))] = [
                path for path in (root / "python", root) if path.is_dir()
            ]

    functions: dict[str, FunctionSpec] = {}
    for logical_id, resource in resources_of_type(template, *FUNCTION_TYPES):
        if not provisioner.active(resource):
            continue
        properties = function_properties(template, resource)

        def value(key: str, default: Any, properties: Mapping[str, Any] = properties) -> Any:
            return resolver.resolve(properties[key]) if key in properties else default

        runtime = str(value("Runtime", ""))
        if not runtime.startswith("python") or value("PackageType", "Zip") != "Zip":
            warnings.append(f"{logical_id}: only zip-packaged Python functions run locally (not {runtime})")
            continue
        handler = str(value("Handler", "app.lambda_handler"))
        code_dir = _code_dir(logical_id, resource, properties, handler, template_dir, state_dir, resolver)
        name = str(provisioner.attribute(logical_id, None))
        arn = str(provisioner.attribute(logical_id, "Arn"))
        memory = int(value("MemorySize", 128))
        logging_config = value("LoggingConfig", {}) or {}
        reserved = value("ReservedConcurrentExecutions", None)

        python_path: list[Path] = [code_dir]
        for layer in _resolve_list(value, "Layers", logical_id, warnings):
            directories = layer_dirs.get(str(layer))
            if directories is None:
                warnings.append(f"{logical_id}: layer {layer} is not in the template; not on PYTHONPATH")
            else:
                python_path.extend(directory for directory in directories if directory not in python_path)

        template_environment: dict[str, str] = {}
        variables = ((properties.get("Environment") or {}).get("Variables")) or {}
        for variable, raw in variables.items():
            try:
                template_environment[variable] = to_string(resolver.resolve(raw))
            except TemplateError as error:
                warnings.append(f"{logical_id}: environment variable {variable} left empty: {error}")
                template_environment[variable] = ""

        spec = FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=arn,
            code_dir=code_dir,
            handler=handler,
            runtime=runtime,
            timeout=float(value("Timeout", 3)),
            memory_size=memory,
            environment={},
            python_path=tuple(python_path),
            log_group_name=str(logging_config.get("LogGroup") or f"/aws/lambda/{name}"),
            max_concurrency=(
                max(1, min(int(reserved), config.MAX_WORKERS_PER_FUNCTION))
                if reserved is not None
                else config.MAX_WORKERS_PER_FUNCTION
            ),
            events=dict(properties.get("Events") or {}),
        )
        local_fields = {
            **fields,
            "function_name": name,
            "memory_size": str(memory),
            "access_key_id": access_key_for(logical_id),
        }
        environment = reserved_environment(spec)
        environment.update(template_environment)
        environment.update({key: item.format_map(local_fields) for key, item in config.LOCAL_ENV_OVERRIDES.items()})
        environment.update(env_overrides)
        environment.update(function_env_overrides.get(logical_id, {}))
        functions[logical_id] = dataclasses.replace(spec, environment=environment)
    return functions


def _resolve_list(value: Any, key: str, logical_id: str, warnings: list[str]) -> list[Any]:
    try:
        resolved = value(key, [])
    except TemplateError as error:
        warnings.append(f"{logical_id}: {key} not resolvable locally: {error}")
        return []
    return list(resolved or [])


def _code_dir(
    logical_id: str,
    resource: Mapping[str, Any],
    properties: Mapping[str, Any],
    handler: str,
    template_dir: Path,
    state_dir: Path,
    resolver: Any,
) -> Path:
    inline = properties.get("InlineCode")
    code = properties.get("Code")
    if inline is None and isinstance(code, dict) and "ZipFile" in code:
        inline = code["ZipFile"]
    if inline is not None:
        directory = state_dir / "inline-code" / logical_id
        module = handler.rpartition(".")[0].replace(".", "/") or "index"
        target = directory / f"{module}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(resolver.resolve(inline)), encoding="utf-8")
        return directory
    code_uri = properties.get("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(f"{logical_id}: CodeUri must be a local path for the local stack")
    return (template_dir / code_uri).resolve()

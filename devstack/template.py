"""Reading the SAM template: CloudFormation short tags, SAM Globals and intrinsic functions.

The template is the only description of the stack: devstack derives tables, keys, queues,
functions, routes and triggers from it and keeps no second copy.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

from devstack import config

_SHORT_TAGS = {
    "!Ref": "Ref",
    "!Condition": "Condition",
    "!GetAtt": "Fn::GetAtt",
    "!Sub": "Fn::Sub",
    "!Join": "Fn::Join",
    "!Select": "Fn::Select",
    "!Split": "Fn::Split",
    "!If": "Fn::If",
    "!Equals": "Fn::Equals",
    "!Not": "Fn::Not",
    "!And": "Fn::And",
    "!Or": "Fn::Or",
    "!FindInMap": "Fn::FindInMap",
    "!Base64": "Fn::Base64",
    "!GetAZs": "Fn::GetAZs",
    "!ImportValue": "Fn::ImportValue",
    "!Cidr": "Fn::Cidr",
    "!ToJsonString": "Fn::ToJsonString",
    "!Length": "Fn::Length",
    "!Transform": "Fn::Transform",
}


class TemplateError(Exception):
    """The template cannot be read or resolved locally."""


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """SafeLoader that turns CloudFormation short tags into their long (JSON) form."""


def _short_tag_constructor(function: str) -> Callable[[yaml.Loader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if function == "Fn::GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            assert isinstance(node, yaml.MappingNode)
            value = loader.construct_mapping(node, deep=True)
        return {function: value}

    return construct


for _tag, _function in _SHORT_TAGS.items():
    _Loader.add_constructor(_tag, _short_tag_constructor(_function))


def load_template(path: Path) -> dict[str, Any]:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except (OSError, yaml.YAMLError) as error:
        raise TemplateError(f"cannot read {path}: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return document


# ---------------------------------------------------------------------------------------------- globals


def merge_globals(global_properties: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge (resource wins), lists are additive, scalars are replaced."""
    merged: dict[str, Any] = copy.deepcopy(dict(global_properties))
    for key, value in properties.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict) and not _is_intrinsic(value):
            merged[key] = merge_globals(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + copy.deepcopy(value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _is_intrinsic(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in {"Ref", "Condition"} | {
        key for key in _SHORT_TAGS.values() if key.startswith("Fn::")
    }


# ---------------------------------------------------------------------------------------------- intrinsics

NO_VALUE: Any = object()  # AWS::NoValue
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class UnresolvedReference(TemplateError):
    def __init__(self, logical_id: str, attribute: str | None) -> None:
        super().__init__(f"{logical_id}{'.' + attribute if attribute else ''} is not available locally")
        self.logical_id = logical_id
        self.attribute = attribute


def references(value: Any) -> set[str]:
    """Logical ids (resources or parameters) that ``value`` refers to through Ref, GetAtt or Sub."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if len(node) == 1:
                key, argument = next(iter(node.items()))
                if key == "Ref" and isinstance(argument, str):
                    found.add(argument)
                    return
                if key == "Fn::GetAtt":
                    parts = argument.split(".", 1) if isinstance(argument, str) else argument
                    if isinstance(parts, list) and parts and isinstance(parts[0], str):
                        found.add(parts[0])
                    return
                if key == "Fn::Sub":
                    text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
                    for name in _SUB_VARIABLE.findall(text):
                        if not name.startswith("!") and name not in variables:
                            found.add(name.split(".", 1)[0])
                    walk(variables)
                    return
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return {name for name in found if not name.startswith("AWS::")}


AttributeLookup = Callable[[str, str | None], Any]


class Resolver:
    """Evaluates intrinsic functions against local values.

    ``attribute(logical_id, None)`` answers ``Ref`` of a resource, ``attribute(logical_id, "Arn")``
    answers ``GetAtt``; it raises :class:`UnresolvedReference` for what is not known (yet).
    """

    def __init__(
        self,
        *,
        parameters: Mapping[str, Any],
        attribute: AttributeLookup,
        conditions: Mapping[str, Any] | None = None,
        mappings: Mapping[str, Any] | None = None,
        stack_name: str = config.STACK_NAME,
    ) -> None:
        self.parameters = dict(parameters)
        self.attribute = attribute
        self.mappings = dict(mappings or {})
        self.pseudo: dict[str, Any] = {
            "AWS::Region": config.REGION,
            "AWS::AccountId": config.ACCOUNT_ID,
            "AWS::StackName": stack_name,
            "AWS::StackId": (
                f"arn:{config.PARTITION}:cloudformation:{config.REGION}:{config.ACCOUNT_ID}:"
                f"stack/{stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::Partition": config.PARTITION,
            "AWS::URLSuffix": config.URL_SUFFIX,
            "AWS::NotificationARNs": [],
        }
        self._condition_definitions = dict(conditions or {})
        self._conditions: dict[str, bool] = {}

    # -- conditions
    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            if name not in self._condition_definitions:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self.resolve(self._condition_definitions[name]))
        return self._conditions[name]

    # -- values
    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        return self.attribute(name, None)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            key, argument = next(iter(value.items()))
            handler = self._functions.get(key)
            if handler is not None:
                return handler(self, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _ref(self, argument: Any) -> Any:
        return self.ref(str(self.resolve(argument)))

    def _get_att(self, argument: Any) -> Any:
        parts = argument.split(".", 1) if isinstance(argument, str) else self.resolve(argument)
        if len(parts) != 2:
            raise TemplateError(f"bad Fn::GetAtt {argument!r}")
        return self.attribute(str(parts[0]), str(parts[1]))

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, str):
            text, variables = argument, {}
        else:
            text, raw_variables = argument
            variables = {name: self.resolve(item) for name, item in raw_variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif name in self.pseudo or name in self.parameters:
                value = self.ref(name)
            elif "." in name:
                logical_id, attribute = name.split(".", 1)
                value = self.attribute(logical_id, attribute)
            else:
                value = self.ref(name)
            if isinstance(value, list):
                value = ",".join(str(item) for item in value)
            return to_string(value)

        return _SUB_VARIABLE.sub(replace, text)

    def _join(self, argument: Any) -> str:
        delimiter, items = argument
        values = self.resolve(items)
        return str(delimiter).join(to_string(item) for item in values)

    def _select(self, argument: Any) -> Any:
        index, items = argument
        return self.resolve(items)[int(self.resolve(index))]

    def _split(self, argument: Any) -> list[str]:
        delimiter, text = argument
        return str(self.resolve(text)).split(str(delimiter))

    def _if(self, argument: Any) -> Any:
        name, when_true, when_false = argument
        return self.resolve(when_true if self.condition(name) else when_false)

    def _equals(self, argument: Any) -> bool:
        left, right = (self.resolve(item) for item in argument)
        return to_string(left) == to_string(right)

    def _not(self, argument: Any) -> bool:
        return not self._truth(argument[0])

    def _and(self, argument: Any) -> bool:
        return all(self._truth(item) for item in argument)

    def _or(self, argument: Any) -> bool:
        return any(self._truth(item) for item in argument)

    def _truth(self, item: Any) -> bool:
        if isinstance(item, dict) and set(item) == {"Condition"}:
            return self.condition(item["Condition"])
        return bool(self.resolve(item))

    def _condition(self, argument: Any) -> bool:
        return self.condition(str(argument))

    def _find_in_map(self, argument: Any) -> Any:
        name, first, second = (self.resolve(item) for item in argument[:3])
        try:
            return self.mappings[name][first][second]
        except KeyError as error:
            raise TemplateError(f"Fn::FindInMap {name}/{first}/{second} not found") from error

    def _base64(self, argument: Any) -> str:
        return base64.b64encode(to_string(self.resolve(argument)).encode()).decode()

    def _get_azs(self, argument: Any) -> list[str]:
        region = self.resolve(argument) or config.REGION
        return [f"{region}{zone}" for zone in "abc"]

    def _to_json_string(self, argument: Any) -> str:
        return json.dumps(self.resolve(argument), separators=(",", ":"))

    def _length(self, argument: Any) -> int:
        return len(self.resolve(argument))

    def _unsupported(self, argument: Any) -> Any:
        raise TemplateError(f"intrinsic function not supported locally: {argument!r}")

    _functions: Mapping[str, Callable[[Resolver, Any], Any]] = {
        "Ref": _ref,
        "Fn::GetAtt": _get_att,
        "Fn::Sub": _sub,
        "Fn::Join": _join,
        "Fn::Select": _select,
        "Fn::Split": _split,
        "Fn::If": _if,
        "Fn::Equals": _equals,
        "Fn::Not": _not,
        "Fn::And": _and,
        "Fn::Or": _or,
        "Condition": _condition,
        "Fn::FindInMap": _find_in_map,
        "Fn::Base64": _base64,
        "Fn::GetAZs": _get_azs,
        "Fn::ToJsonString": _to_json_string,
        "Fn::Length": _length,
        "Fn::ImportValue": _unsupported,
        "Fn::Cidr": _unsupported,
        "Fn::Transform": _unsupported,
    }


def to_string(value: Any) -> str:
    """How CloudFormation renders a scalar where a string is expected (env vars, Sub)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(to_string(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    if value is None:
        return ""
    return str(value)


# ---------------------------------------------------------------------------------------------- parameters


def parameter_values(
    template: Mapping[str, Any], overrides: Mapping[str, Any], fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Local parameter values: overrides, else the local defaults of config, else template Defaults.

    ``console_url`` may be left out (no console): then AllowedOrigins falls back to its template Default.
    """
    fields = {"console_url": "", **fields}
    declared: Mapping[str, Any] = template.get("Parameters") or {}
    values: dict[str, Any] = {}
    unknown = set(overrides) - set(declared)
    if unknown:
        raise TemplateError(f"parameter overrides for undeclared parameters: {sorted(unknown)}")
    for name, definition in declared.items():
        if name in overrides:
            raw: Any = overrides[name]
        elif name in config.LOCAL_PARAMETER_VALUES:
            raw = config.LOCAL_PARAMETER_VALUES[name].format_map(fields)
        elif "Default" in definition:
            raw = definition["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default and no local value")
        kind = str(definition.get("Type", "String"))
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            values[name] = (
                [str(item) for item in raw]
                if isinstance(raw, list)
                else [item.strip() for item in str(raw).split(",")]
                if str(raw)
                else []
            )
        else:
            values[name] = to_string(raw)
            allowed = definition.get("AllowedValues")
            if allowed is not None and values[name] not in [to_string(item) for item in allowed]:
                raise TemplateError(f"parameter {name}={values[name]!r} is not one of {allowed}")
    return values


# ---------------------------------------------------------------------------------------------- helpers


def resources_of_type(template: Mapping[str, Any], *types: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for logical_id, resource in (template.get("Resources") or {}).items():
        if isinstance(resource, dict) and resource.get("Type") in types:
            yield logical_id, resource


def function_properties(template: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
    """A function's Properties with Globals.Function merged in (SAM semantics)."""
    global_function = ((template.get("Globals") or {}).get("Function")) or {}
    properties = resource.get("Properties") or {}
    if resource.get("Type") != "AWS::Serverless::Function":
        return dict(properties)
    return merge_globals(global_function, properties)


def http_api_properties(template: Mapping[str, Any], resource: Mapping[str, Any]) -> dict[str, Any]:
    global_api = ((template.get("Globals") or {}).get("HttpApi")) or {}
    return merge_globals(global_api, resource.get("Properties") or {})


def route_scopes(template: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[str]:
    """Every scope some HttpApi route of the template requires, as deployed with these parameters.

    Only parameters and conditions may name a scope (a token tool knows no resource ids).
    """

    def unavailable(logical_id: str, attribute: str | None) -> Any:
        raise UnresolvedReference(logical_id, attribute)

    resolver = Resolver(
        parameters=parameters,
        attribute=unavailable,
        conditions=template.get("Conditions"),
        mappings=template.get("Mappings"),
    )
    scopes: set[str] = set()
    for _, resource in resources_of_type(template, "AWS::Serverless::Function"):
        for event in ((resource.get("Properties") or {}).get("Events") or {}).values():
            if isinstance(event, dict) and event.get("Type") == "HttpApi":
                auth = (event.get("Properties") or {}).get("Auth") or {}
                scopes.update(str(scope) for scope in resolver.resolve(auth.get("AuthorizationScopes") or []))
    return sorted(scopes)

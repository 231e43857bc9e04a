"""The OpenAPI document is valid OpenAPI 3.1 and true: exactly the routes and methods the app serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs
import schemathesis
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from tornado import web
from tornado.routing import URLSpec

from tests.conftest import Server
from workbench.app import HANDLER_MODULES
from workbench.openapi import document

HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
DOC = document()


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its local ``$ref`` points to."""
    reference = node.get("$ref")
    if reference is None:
        return node
    target: Any = DOC
    for key in reference.removeprefix("#/").split("/"):
        target = target[key]
    assert isinstance(target, dict)
    return target


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def path_parameters(path: str) -> list[dict[str, Any]]:
    item = DOC["paths"][path]
    declared = [
        *item.get("parameters", []),
        *(p for m in HTTP_METHODS for p in item.get(m, {}).get("parameters", [])),
    ]
    return [resolved for resolved in map(resolve, declared) if resolved["in"] == "path"]


def sample_url(path: str) -> str:
    """``path`` with each path parameter replaced by its documented example, as a client sends it."""
    url = path
    for param in path_parameters(path):
        url = url.replace("{" + param["name"] + "}", quote(param["example"], safe="/"))
    return url


def routes() -> list[URLSpec]:
    """The app's routes, in the order the app matches them."""
    return [URLSpec(*rule) for module in HANDLER_MODULES for rule in module.default_handlers]


def route_for(path: str) -> URLSpec:
    url = sample_url(path)
    matching = [spec for spec in routes() if spec.regex.match(url)]
    assert matching, f"no route serves the documented path {path} ({url})"
    return matching[0]


def implemented(handler: type[web.RequestHandler]) -> set[str]:
    return {
        method
        for method in HTTP_METHODS
        if getattr(handler, method) is not getattr(web.RequestHandler, method)
    }


def documented(path: str) -> set[str]:
    return {method for method in HTTP_METHODS if method in DOC["paths"][path]}


# --------------------------------------------------------------------------------------------- validity


def test_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"].startswith("3.1.")
    errors = [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(DOC)]
    assert errors == []


def test_every_operation_loads_in_schemathesis() -> None:
    loaded = list(schemathesis.openapi.from_dict(DOC).get_all_operations())
    assert [result.err() for result in loaded if not isinstance(result, Ok)] == []
    assert len(loaded) == len(list(operations()))


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def test_every_reference_resolves_and_every_schema_is_valid_json_schema() -> None:
    for reference in references(DOC):
        assert resolve({"$ref": reference}), reference
    for name, body in DOC["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(body), name


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))


def test_every_error_answer_is_the_error_shape() -> None:
    error = {"$ref": "#/components/schemas/Error"}
    for path, method, op in operations():
        for status, answer in op["responses"].items():
            if int(status) >= 400 and (path, status) != ("/api/v1/health", "503"):
                assert resolve(answer)["content"] == {"application/json": {"schema": error}}, (method, path)


def test_only_health_metrics_the_document_and_the_page_are_public() -> None:
    public = {path for path, _, op in operations() if op.get("security") == []}
    assert public == {"/api/v1/health", "/metrics", "/api/v1/openapi.json", "/", "/static/{name}"}
    assert DOC["security"] == [{"bearer": []}]
    bearer = DOC["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path, _, op in operations():
        assert (op.get("security") == []) == ("401" not in op["responses"]), path


# ------------------------------------------------------------------------------------ truth vs. the app


def test_every_documented_path_is_routed_with_its_parameter_names() -> None:
    for path in DOC["paths"]:
        spec = route_for(path)
        assert {param["name"] for param in path_parameters(path)} == set(spec.regex.groupindex), path


def test_every_route_is_documented_with_exactly_the_methods_its_handler_implements() -> None:
    methods: dict[str, set[str]] = {spec.regex.pattern: set() for spec in routes()}
    for path in DOC["paths"]:
        methods[route_for(path).regex.pattern] |= documented(path)
    for spec in routes():
        assert methods[spec.regex.pattern] == implemented(spec.handler_class), spec.regex.pattern


def test_the_server_serves_the_document_without_a_token(engineless: Server) -> None:
    answer = httpx.get(f"{engineless.url}/api/v1/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == DOC

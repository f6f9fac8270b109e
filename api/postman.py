"""The Postman collection, generated from the OpenAPI document so the two cannot drift.

`python -m api.postman > postman-collection.json` rewrites it; a test fails when the file in
the repository differs from what the current API generates.
"""

from __future__ import annotations

import json
from typing import Any

from api.app import create_app

_EXAMPLE_BY_TYPE = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}


def collection(openapi: dict[str, Any]) -> dict[str, Any]:
    """A Postman v2.1 collection: one folder per tag, one request per operation."""
    folders: dict[str, list[dict[str, Any]]] = {}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["other"])[0]
            folders.setdefault(tag, []).extend(_requests(path, method, operation, openapi))
    return {
        "info": {
            "name": openapi["info"]["title"],
            "description": openapi["info"].get("description", ""),
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{apiToken}}", "type": "string"}]},
        "variable": [
            {"key": "baseUrl", "value": "http://localhost:3000"},
            {"key": "apiToken", "value": ""},
            {"key": "jobId", "value": ""},
        ],
        "item": [{"name": tag, "item": items} for tag, items in folders.items()],
    }


def _requests(path: str, method: str, operation: dict[str, Any], openapi: dict[str, Any]) -> list[dict[str, Any]]:
    """One request, or one per body type when the operation takes several (upload or URL)."""
    parameters = operation.get("parameters", [])
    segments = [("{{jobId}}" if s == "{job_id}" else s) for s in path.strip("/").split("/")]
    query = [
        {
            "key": p["name"],
            "value": "users" if p["name"] == "resource" else "",
            "disabled": not p.get("required", False),
        }
        for p in parameters
        if p["in"] == "query"
    ]
    request: dict[str, Any] = {
        "method": method.upper(),
        "header": [{"key": p["name"], "value": "", "disabled": True} for p in parameters if p["in"] == "header"],
        "url": {
            "raw": "{{baseUrl}}/" + "/".join(segments),
            "host": ["{{baseUrl}}"],
            "path": segments,
            "query": query,
        },
        "description": operation.get("description", ""),
    }
    name = operation.get("summary") or operation["operationId"]
    content = (operation.get("requestBody") or {}).get("content", {})
    if not content:
        return [{"name": name, "request": request}]
    return [
        {
            "name": f"{name} ({media_type})" if len(content) > 1 else name,
            "request": {**request, "body": _body(media_type, body, openapi)},
        }
        for media_type, body in content.items()
    ]


def _body(media_type: str, content: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    if media_type == "multipart/form-data":
        properties = content["schema"]["properties"]
        return {
            "mode": "formdata",
            "formdata": [
                {"key": name, "type": "file", "src": ""}
                if spec.get("format") == "binary"
                else {"key": name, "type": "text", "value": (spec.get("enum") or [""])[0]}
                for name, spec in properties.items()
            ],
        }
    schema = _resolve(content["schema"], openapi)
    example = {name: _example(spec, openapi) for name, spec in schema.get("properties", {}).items()}
    return {"mode": "raw", "raw": json.dumps(example, indent=2), "options": {"raw": {"language": "json"}}}


def _resolve(schema: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _example(spec: dict[str, Any], openapi: dict[str, Any]) -> Any:
    spec = _resolve(spec, openapi)
    if spec.get("examples"):
        return spec["examples"][0]
    if spec.get("default") is not None:
        return spec["default"]
    if "enum" in spec:
        return spec["enum"][0]
    if "anyOf" in spec:
        return _example(next(s for s in spec["anyOf"] if s.get("type") != "null"), openapi)
    return _EXAMPLE_BY_TYPE.get(spec.get("type", "string"), "")


def render() -> str:
    return json.dumps(collection(create_app().openapi()), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")

"""MkDocs hook: the API reference page, generated at build time from the OpenAPI schema that the
service itself serves at /api/schema/ (``manage.py spectacular``), so the page cannot drift from
the code. The site also gets the schema file and an offline Swagger UI (the files of
drf-spectacular-sidecar, which the service uses for /api/docs/)."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PAGE = "reference/openapi.md"
SCHEMA_FILE = "reference/openapi.json"
SWAGGER_DIR = "reference/swagger"
SWAGGER_ASSETS = ["swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"]
METHODS = ["get", "post", "put", "patch", "delete"]

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Image classification service: API</title>
<link rel="stylesheet" href="swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="swagger-ui-bundle.js"></script>
<script src="swagger-ui-standalone-preset.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "../openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "BaseLayout",
  supportedSubmitMethods: []});
</script></body></html>
"""


def service_schema() -> dict[str, Any]:
    """The schema, as 'manage.py spectacular' prints it (validated against OpenAPI 3)."""
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--format", "openapi-json", "--validate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(result.stdout)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    schema = service_schema()
    files.append(File.generated(config, PAGE, content=reference_page(schema)))
    files.append(File.generated(config, SCHEMA_FILE, content=json.dumps(schema, indent=2)))
    import drf_spectacular_sidecar

    sidecar = Path(drf_spectacular_sidecar.__file__).parent / "static" / "drf_spectacular_sidecar"
    for name in SWAGGER_ASSETS:
        source = sidecar / "swagger-ui-dist" / name
        files.append(File.generated(config, f"{SWAGGER_DIR}/{name}", abs_src_path=str(source)))
    files.append(File.generated(config, f"{SWAGGER_DIR}/index.html", content=SWAGGER_PAGE))
    return files


def reference_page(schema: dict[str, Any]) -> str:
    info = schema["info"]
    lines = [
        "# API reference",
        "",
        f"{info.get('description', '')} This page is generated from the OpenAPI "
        f"{schema['openapi']} schema of the service (version {info['version']}) each time the "
        "documentation is built, so it says what the code does.",
        "",
        "- A running service serves the same schema at `/api/schema/` and an interactive "
        "Swagger UI at [/api/docs/](http://127.0.0.1:8000/api/docs/) "
        "(`make run`, then open it).",
        "- This site's copy: [the schema as JSON](openapi.json) and "
        "[a Swagger UI over it](swagger/index.html) (no request can be sent from it).",
        "- How to call it, with examples and the error codes: [Using the API](../api.md).",
        "",
        "| operation | what it does |",
        "|---|---|",
    ]
    operations = [
        (path, method, item[method])
        for path, item in schema["paths"].items()
        for method in METHODS
        if method in item
    ]
    for path, method, operation in operations:
        lines.append(
            f"| [`{method.upper()} {path}`](#{_operation_anchor(method, path)}) "
            f"| {_one_line(operation.get('description', ''))} |"
        )
    lines.append("")
    for path, method, operation in operations:
        lines += _operation(path, method, operation)
    lines += ["## Schemas", ""]
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        lines += _component(name, component)
    return "\n".join(lines) + "\n"


def _operation(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    lines = [
        f"## `{method.upper()} {path}` {{#{_operation_anchor(method, path)}}}",
        "",
        _one_line(operation.get("description", "")),
        "",
    ]
    security = operation.get("security")
    if security is not None:
        schemes = [name for requirement in security for name in requirement] or []
        anonymous = any(not requirement for requirement in security)
        said = ", ".join(f"`{name}`" for name in schemes) or "none"
        lines += [f"Authentication: {said}{' or anonymous' if anonymous else ''}.", ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | meaning |", "|---|---|---|---|"]
        for parameter in parameters:
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_type(parameter['schema'])} "
                f"| {_one_line(parameter.get('description', ''))} |"
            )
        lines.append("")
    body = operation.get("requestBody")
    if body:
        lines += ["| request body | schema |", "|---|---|"]
        for content_type, content in body["content"].items():
            lines.append(f"| `{content_type}` | {_type(content.get('schema', {}))} |")
        lines.append("")
    lines += ["| status | answer | when |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        answers = [
            f"`{content_type}` {_type(content.get('schema', {}))}"
            for content_type, content in response.get("content", {}).items()
        ]
        lines.append(
            f"| {status} | {', '.join(answers) or 'no body'} "
            f"| {_one_line(response.get('description', ''))} |"
        )
    lines.append("")
    return lines


def _component(name: str, component: dict[str, Any]) -> list[str]:
    lines = [f"### {name} {{#{_schema_anchor(name)}}}", ""]
    if "enum" in component:
        values = ", ".join(f"`{value}`" for value in component["enum"])
        return [*lines, f"One of {values}.", ""]
    properties = component.get("properties", {})
    required = set(component.get("required", []))
    if not properties:
        return [*lines, _type(component), ""]
    lines += ["| field | type | required | meaning |", "|---|---|---|---|"]
    for field, spec in properties.items():
        lines.append(
            f"| `{field}` | {_type(spec)} | {'yes' if field in required else ''} "
            f"| {_one_line(spec.get('description', ''))} |"
        )
    lines.append("")
    alternatives = [
        " + ".join(f"`{field}`" for field in option["required"])
        for option in component.get("oneOf", [])
        if "required" in option
    ]
    if alternatives:
        lines += [f"Exactly one of {', '.join(alternatives)}.", ""]
    return lines


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        name = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_schema_anchor(name)})"
    kind = spec.get("type")
    if kind == "array":
        return f"array of {_type(spec.get('items', {}))}"
    if kind == "object" and "additionalProperties" in spec:
        return f"object of {_type(spec['additionalProperties'])}"
    if kind is None:
        return "any JSON"
    words = [kind]
    if "format" in spec:
        words.append(f"({spec['format']})")
    if "minimum" in spec and "maximum" in spec and spec["maximum"] < 2**31:
        words.append(f"{_number(spec['minimum'])}-{_number(spec['maximum'])}")
    if "maxLength" in spec:
        words.append(f"at most {spec['maxLength']} characters")
    if spec.get("nullable"):
        words.append("or null")
    if "default" in spec:
        words.append(f"default {spec['default']}")
    return " ".join(words)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _operation_anchor(method: str, path: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in path.strip("/")).strip("-")
    return f"{method}-{slug}".replace("--", "-")


def _schema_anchor(name: str) -> str:
    return f"schema-{name.lower()}"

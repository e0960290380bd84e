#!/usr/bin/env python3
"""Checks recorded HTTP exchanges against an OpenAPI document, with openapi-core.

Usage: validate.py EXCHANGES.json

EXCHANGES.json (written by tests/integration/openapi_conformance.rs) holds
{"document": <the served /openapi.json>, "exchanges": [{"method", "path",
"query", "request_headers", "request_body", "status", "response_headers",
"response_body"}, ...]} with bodies as text.

Every response must be described by the document: its status, content type,
headers and body. An exchange whose path the document does not list must be
a 404 described by #/components/responses/NotFound; a listed path asked with
a method it does not list must be a 405 described by
#/components/responses/MethodNotAllowed (the document's own description of
its fallbacks). The request of every 2xx exchange must validate too.

Prints one line per exchange, the precise reasons of each failure, and exits
1 when anything fails (2 when openapi-core is missing or not the pinned
version).
"""

import copy
import json
import re
import sys

# `cargo xtask test` installs exactly this version (xtask/src/main.rs).
PINNED_OPENAPI_CORE = "0.23.1"

try:
    import openapi_core
    from openapi_core import Config, OpenAPI
    from openapi_core.deserializing.media_types.util import plain_loads
    from openapi_core.testing import MockRequest, MockResponse
except ImportError as error:
    print(
        f"openapi-core is not installed ({error}): "
        f"pip install openapi-core=={PINNED_OPENAPI_CORE} (cargo xtask test does)",
        file=sys.stderr,
    )
    sys.exit(2)

if openapi_core.__version__ != PINNED_OPENAPI_CORE:
    print(
        f"openapi-core {openapi_core.__version__} is installed; these checks are "
        f"pinned to {PINNED_OPENAPI_CORE}: pip install openapi-core=={PINNED_OPENAPI_CORE}",
        file=sys.stderr,
    )
    sys.exit(2)

# Text bodies openapi-core has no deserializer for (it would hand over bytes).
CONFIG = Config(
    extra_media_type_deserializers={
        "text/css": plain_loads,
        "text/javascript": plain_loads,
        "application/openmetrics-text": plain_loads,
    }
)

HOST_URL = "http://connhost.test"


def template_regex(template):
    """A path template such as /v1/providers/{id} as a regex."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "^"
        + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        + "$"
    )


def find_template(document, path):
    """The document's path template that `path` falls under, or None."""
    # Literal paths first, as routers match them.
    for template in sorted(document["paths"], key=lambda t: "{" in t):
        if template_regex(template).match(path):
            return template
    return None


def specification_for(document, exchange, cache):
    """The document to check `exchange` against (with the fallback answer
    added when the document does not list its path or method), or a reason
    it cannot be described at all."""
    method = exchange["method"].lower()
    template = find_template(document, exchange["path"])
    if template is not None and method in document["paths"][template]:
        key = "document"
        extend = None
    elif template is None:
        if exchange["status"] != 404:
            return None, f"the path is not in the document, so it must answer 404, not {exchange['status']}"
        key = ("not-found", exchange["path"], method)
        extend = (exchange["path"], method, "404", "NotFound")
    else:
        if exchange["status"] != 405:
            return None, (
                f"{template} does not list {method.upper()}, so it must answer 405, "
                f"not {exchange['status']}"
            )
        key = ("method-not-allowed", template, method)
        extend = (template, method, "405", "MethodNotAllowed")
    if key not in cache:
        spec = document
        if extend is not None:
            path, method, status, response = extend
            if response not in document.get("components", {}).get("responses", {}):
                return None, (
                    f"the document does not describe this fallback answer: "
                    f"#/components/responses/{response} is missing"
                )
            spec = copy.deepcopy(document)
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"\{([^}]+)\}", path)
            ]
            spec["paths"].setdefault(path, {})[method] = {
                "parameters": parameters,
                "responses": {status: {"$ref": f"#/components/responses/{response}"}},
            }
        # from_dict also checks the document itself (openapi-spec-validator).
        try:
            cache[key] = OpenAPI.from_dict(spec, config=CONFIG)
        except Exception as error:
            cache[key] = "the document is not valid OpenAPI: " + " / ".join(describe(error))
    if isinstance(cache[key], str):
        return None, cache[key]
    return cache[key], None


def describe(error):
    """Every reason an openapi-core error carries, one per line."""
    lines = [f"{type(error).__name__}: {error}"]
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        for schema_error in getattr(error, "schema_errors", ()) or ():
            lines.extend(schema_error_lines(schema_error, "  "))
        error = error.__cause__ or error.__context__
    return lines


def schema_error_lines(error, indent):
    """A jsonschema error with its sub-errors (each oneOf branch's)."""
    where = getattr(error, "json_path", "$")
    lines = [f"{indent}at {where}: {error.message}"]
    for sub in sorted(getattr(error, "context", ()) or (), key=lambda e: str(e.schema_path)):
        branch = "/".join(str(p) for p in sub.schema_path)
        lines.append(f"{indent}  branch {branch}: at {sub.json_path}: {sub.message}")
    return lines


def request_of(exchange):
    headers = exchange.get("request_headers") or {}
    body = exchange.get("request_body")
    return MockRequest(
        HOST_URL,
        exchange["method"],
        exchange["path"],
        args=exchange.get("query") or {},
        headers=headers,
        data=body.encode() if body is not None else None,
        content_type=headers.get("content-type", ""),
    )


def response_of(exchange):
    headers = exchange.get("response_headers") or {}
    return MockResponse(
        exchange["response_body"].encode(),
        status_code=exchange["status"],
        headers=headers,
        content_type=headers.get("content-type", ""),
    )


def check(document, exchange, cache):
    """The reasons `exchange` is not described by the document (empty: ok)."""
    spec, reason = specification_for(document, exchange, cache)
    if spec is None:
        return [reason]
    problems = []
    request = request_of(exchange)
    try:
        spec.validate_response(request, response_of(exchange))
    except Exception as error:  # openapi-core's errors have no common base
        problems.append("response:")
        problems.extend("  " + line for line in describe(error))
    if 200 <= exchange["status"] < 300:
        try:
            spec.validate_request(request)
        except Exception as error:
            problems.append("request (answered 2xx, so it must be valid):")
            problems.extend("  " + line for line in describe(error))
    return problems


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as file:
        recorded = json.load(file)
    document = recorded["document"]
    cache = {}
    failures = 0
    for exchange in recorded["exchanges"]:
        content_type = (exchange.get("response_headers") or {}).get("content-type", "-")
        title = f"{exchange['method']} {exchange['path']} -> {exchange['status']} {content_type}"
        problems = check(document, exchange, cache)
        if problems:
            failures += 1
            print(f"FAIL {title}")
            for line in problems:
                print(f"    {line}")
            print(f"    response body: {exchange['response_body'][:300]}")
        else:
            print(f"ok   {title}")
    total = len(recorded["exchanges"])
    print(f"{total - failures} of {total} exchanges are described by the document (openapi-core {openapi_core.__version__})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

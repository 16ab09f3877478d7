"""Validates every example of the OpenAPI document against the schema beside it.

`functions/check-openapi.sh` runs it after openapi-spec-validator (which checks that the
document is valid OpenAPI, not that its schemas accept the API's real requests). The examples
are real requests, generated from the server's types and read back by them
(`functions/tests/openapi.rs`), so a schema that refuses one is wrong.
    python check-openapi-examples.py openapi.json
"""
import json
import sys

from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

path = sys.argv[1]
doc = json.load(open(path))
# "#/components/schemas/X" resolves inside the document itself.
resource = Resource.from_contents(doc, default_specification=DRAFT202012)
registry = Registry().with_resource("urn:posthuman:openapi", resource)

checked, failures = 0, []
for route, item in doc["paths"].items():
    for method, op in item.items():
        content = op.get("requestBody", {}).get("content", {})
        for media, c in content.items():
            for name, ex in c.get("examples", {}).items():
                schema = dict(c["schema"])
                if "$ref" in schema:
                    schema["$ref"] = "urn:posthuman:openapi" + schema["$ref"]
                v = OAS31Validator(schema, registry=registry)
                errors = sorted(v.iter_errors(ex["value"]), key=lambda e: list(e.path))
                checked += 1
                for e in errors:
                    where = "/".join(str(p) for p in e.absolute_path) or "(body)"
                    failures.append(f"{method.upper()} {route} example {name!r} at {where}: {e.message[:300]}")
for f in failures:
    print(f)
if failures:
    sys.exit(f"{len(failures)} error(s): the document's schemas refuse its own examples")
if checked == 0:
    sys.exit("no examples in the document: nothing was checked")
print(f"{path}: {checked} request examples valid against their schemas")

"""Property-based tests of the merchant gateway's HTTP API against its own OpenAPI document.

Schemathesis generates requests for every operation from the document (Hypothesis
strategies); each is signed as the merchant signs (Ed25519 over METHOD, PATH, TIMESTAMP,
NONCE and BODY, over the exact bytes sent) and sent; every answer is checked against the
document: no server error, a documented status code, content type, headers and body schema.

Run by `cargo test -p cbdc-tests --test merchant_openapi`, which starts a network and a
gateway and passes: CBDC_GATEWAY (base URL), CBDC_MERCHANT_ID, CBDC_MERCHANT_SEED (hex),
CBDC_EXAMPLES (per operation). Prints one line per operation and exits 1 on any failure.
"""

import collections
import json
import os
import secrets
import sys
import time

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from nacl.signing import SigningKey
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

BASE = os.environ["CBDC_GATEWAY"]
MERCHANT = os.environ["CBDC_MERCHANT_ID"]
KEY = SigningKey(bytes.fromhex(os.environ["CBDC_MERCHANT_SEED"]))
EXAMPLES = int(os.environ.get("CBDC_EXAMPLES", "40"))

schema = schemathesis.openapi.from_url(BASE + "/v1/openapi.json")
# What the document promises of every answer. (Authentication is this API's own signature
# scheme, outside Schemathesis's model of API keys: the hostile-request tests cover it.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
session = requests.Session()


def send(case, signed):
    kwargs = case.as_transport_kwargs(base_url=BASE)
    body = kwargs.get("json")
    data = kwargs.get("data")
    if body is not None:
        data = json.dumps(body, separators=(",", ":")).encode()
    elif isinstance(data, str):
        data = data.encode()
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
    if data:
        headers["Content-Type"] = "application/json"
    request = requests.Request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), data=data or None, headers=headers
    ).prepare()
    if signed:
        timestamp = str(int(time.time()))
        nonce = secrets.token_hex(12)
        message = f"{request.method}\n{request.path_url}\n{timestamp}\n{nonce}\n".encode()
        message += (request.body or b"") + b"\n"
        signature = KEY.sign(message).signature.hex()
        request.headers["Authorization"] = (
            f'CBDC-ED25519 merchant_id="{MERCHANT}",nonce="{nonce}",'
            f'timestamp="{timestamp}",signature="{signature}"'
        )
    return session.send(request, timeout=30)


def main():
    failed = []
    total = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        signed = bool(operation.definition.raw.get("security"))
        statuses = collections.Counter()
        problems = []

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
        @given(case=operation.as_strategy())
        def check(case):
            # The generated Authorization header is replaced by a real signature.
            if case.headers:
                case.headers = {k: v for k, v in case.headers.items() if k.lower() != "authorization"}
            response = send(case, signed)
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except BaseException as e:  # a failed check: keep the first few, go on
                if len(problems) < 3:
                    problems.append(f"{case.method} {case.formatted_path}: {e}".splitlines()[0][:300])

        check()
        total.update(statuses)
        line = f"{operation.method.upper():5} {operation.path}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}"
        print(line + ("" if not problems else "  FAILED: " + " | ".join(problems)), flush=True)
        if problems:
            failed.append(operation.path)
    print(f"all: {sum(total.values())} requests, statuses {dict(sorted(total.items()))}")
    if failed:
        print(f"{len(failed)} operations failed: {failed}")
        sys.exit(1)


main()

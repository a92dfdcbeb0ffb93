"""The tests: one per normative requirement that can be checked from outside.

Each test is named after its requirement and cites the section of the
digest (``/work/shared/spec/hddt-digest.md``, "§N") or of the HDDT document
in its docstring. A test raises ``AssertionError`` when the server breaks the
requirement and ``Skip`` when it cannot be checked against this server (for
instance, a test that needs a second DiGA or patient, which only a server the
runner set up itself has). The order matters only where noted: tests that
end pairings or deactivate a DiGA make their own pairings, and the ones that
change the registry come last.
"""

import base64
import collections
import datetime
import json
import os
import re
import shutil
import subprocess
import time
import traceback
import xml.etree.ElementTree as ElementTree

import requests
from jwcrypto import jwk, jws

from conformance.hddt import privacy
from conformance.hddt.diga import FHIR_JSON, miv_of, query_value
from conformance.hddt.fhir import SENT
from conformance.hddt.ours import BG_MIV, CGM_MIV, make_client_certificate

VS_BASE = "https://gematik.de/fhir/hddt/ValueSet/"
BG_SCOPE = f"patient/Observation.rs?code:in={VS_BASE}{BG_MIV}"
CGM_SCOPE = f"patient/Observation.rs?code:in={VS_BASE}{CGM_MIV}"
LUNG_SCOPE = f"patient/Observation.rs?code:in={VS_BASE}hddt-miv-lung-function-testing"
BG_CODES = {"2339-0", "15074-8", "2345-7", "14749-6", "41653-7", "14743-9"}
CGM_CODES = {"99504-3", "105272-9"}
UCUM = "http://unitsofmeasure.org"
OBSERVATION_STATUS = {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
DEVICE_STATUS = {"active", "inactive", "entered-in-error", "unknown"}
# ValueSet hddt-device-type (SNOMED CT), digest §4 Profiles.
HDDT_DEVICE_TYPES = {"337414009", "700585005", "701815004", "702203005", "463729000", "701750003", "70665002", "334990001", "303501006"}
# The metrics of the CGM summary (digest §4 Aggregated data); mean glucose in either unit.
SUMMARY_CODES = {"107931-8", "106793-3", "97506-0", "104638-2", "104636-6", "104637-4"}
MEAN_GLUCOSE_CODES = {"97507-8", "105273-7"}
KNOWN_MIVS = {
    BG_MIV,
    CGM_MIV,
    "hddt-miv-blood-pressure-value",
    "hddt-miv-lung-function-testing",
}


class Skip(Exception):
    """The requirement cannot be checked against this server."""


class Test:
    """A registered test."""

    def __init__(self, function, needs_ours):
        self.name = function.__name__
        self.function = function
        self.needs_ours = needs_ours


TESTS = []
AFTER = []


def test(function=None, *, ours=None, after=False):
    """Registers a test; ``ours`` names what it needs that only a server the runner set up has."""

    def register(function):
        (AFTER if after else TESTS).append(Test(function, ours))
        return function

    return register(function) if function else register


def run_one(entry, env):
    """Runs one test: ``("ok" | "fail" | "skip", why)``."""
    if entry.needs_ours and env.ours is None:
        return "skip", f"needs {entry.needs_ours}, which only a server the runner set up has"
    try:
        entry.function(env)
        return "ok", ""
    except Skip as reason:
        return "skip", str(reason)
    except AssertionError as error:
        return "fail", " ".join(str(error).split()) or "assertion failed"
    except Exception as error:  # an unexpected refusal or a broken connection
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == __file__]
        line = frames[-1].lineno if frames else "?"
        return "fail", f"{type(error).__name__}: {' '.join(str(error).split())[:300]} (checks.py line {line})"


def expect(condition, why):
    """Fails the test with ``why`` unless ``condition``."""
    if not condition:
        raise AssertionError(why)


def describe(response):
    """A short description of a response for failure messages."""
    return f"{response.status_code} {response.text[:200]!r}"


def oauth_error(response, statuses, errors):
    """Expects an OAuth JSON error with a status in ``statuses`` and ``error`` in ``errors``."""
    statuses = (statuses,) if isinstance(statuses, int) else statuses
    errors = (errors,) if isinstance(errors, str) else errors
    expect(response.status_code in statuses, f"status: want {statuses}, got {describe(response)}")
    expect(
        response.headers.get("Content-Type", "").startswith("application/json"),
        f"error is not application/json: {response.headers.get('Content-Type')}",
    )
    error = response.json().get("error")
    expect(error in errors, f"error: want {errors}, got {error!r}")


def refused_at_tls_or(call, statuses):
    """Calls ``call``: None if the TLS handshake fails, else the response, whose status must be in ``statuses``."""
    try:
        response = call()
    except requests.exceptions.ConnectionError:  # SSLError included
        return None
    expect(response.status_code in statuses, f"want a TLS refusal or {statuses}, got {describe(response)}")
    return response


def jwt_parts(token):
    """The decoded header and claims of a compact JWS; AssertionError if it is none."""
    parts = token.split(".")
    expect(len(parts) != 5, "the token is a JWE (encrypted); tokens MUST NOT be encrypted")
    expect(len(parts) == 3, f"the token is not a compact JWS ({len(parts)} parts)")

    def decode(part):
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    return decode(parts[0]), decode(parts[1])


def is_jwt(token):
    """Whether ``token`` looks like a compact JWS or JWE."""
    return token.count(".") in (2, 4) and token.startswith("eyJ")


def browser_session(env):
    """A browser: no client certificate, the server's CA, no proxy or CA from the environment."""
    browser = requests.Session()
    browser.trust_env = False
    browser.verify = env.ca_file
    return browser


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)


def fhir_instant(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def observations(entries):
    """The Observation resources among search entries (mode match)."""
    return [
        entry["resource"]
        for entry in entries
        if entry.get("resource", {}).get("resourceType") == "Observation"
        and entry.get("search", {}).get("mode", "match") == "match"
    ]


def codes_of(observation):
    return {coding.get("code") for coding in observation.get("code", {}).get("coding", [])}


def bundle_observations(env, diga, token, query):
    """Observations of one search page (checked status 200)."""
    response = diga.fhir("GET", query, token)
    expect(response.status_code == 200, f"GET {query}: {describe(response)}")
    return observations(env.fhir_json(response, f"GET {query}").get("entry", []))


def outcome_issue_text(body):
    return " ".join(
        f"{issue.get('code')} {issue.get('diagnostics', '')} "
        + " ".join(c.get("code", "") for c in issue.get("details", {}).get("coding", []))
        for issue in body.get("issue", [])
    )


def expect_outcome(env, response, status, where):
    """Expects ``status`` with an OperationOutcome body."""
    expect(response.status_code == status, f"{where}: want {status}, got {describe(response)}")
    body = env.fhir_json(response, where)
    expect(isinstance(body, dict) and body.get("resourceType") == "OperationOutcome",
           f"{where}: not an OperationOutcome: {response.headers.get('Content-Type')} {response.text[:200]!r}")
    return body


# ---------------------------------------------------------------------------
# §1 Authorization server metadata (RFC 8414)
# ---------------------------------------------------------------------------


@test
def test_metadata_is_public_json(env):
    """§1 Endpoints: ``GET /.well-known/oauth-authorization-server`` needs no client certificate and returns JSON."""
    response = env.metadata_response
    expect(response.status_code == 200, describe(response))
    expect(response.headers.get("Content-Type", "").startswith("application/json"), "not JSON")
    expect(env.metadata.get("issuer"), "no issuer")


@test
def test_metadata_issuer_matches_discovery_url(env):
    """RFC 8414 §3.3 (§1 Metadata): ``issuer`` MUST be identical to the URL the well-known path was appended to; every endpoint is https."""
    fetched = env.metadata_response.url
    expect(fetched == env.metadata["issuer"].rstrip("/") + "/.well-known/oauth-authorization-server",
           f"issuer {env.metadata['issuer']!r} fetched from {fetched!r}")
    for name in ("authorization_endpoint", "token_endpoint", "pushed_authorization_request_endpoint", "revocation_endpoint"):
        expect(str(env.metadata.get(name, "")).startswith("https://"), f"{name} {env.metadata.get(name)!r}")


@test
def test_metadata_requires_pushed_authorization_requests(env):
    """§1 Metadata MUST: ``pushed_authorization_request_endpoint`` with ``require_pushed_authorization_requests`` = true."""
    expect(env.metadata.get("pushed_authorization_request_endpoint"), "no pushed_authorization_request_endpoint")
    expect(env.metadata.get("require_pushed_authorization_requests") is True, "require_pushed_authorization_requests is not true")


@test
def test_metadata_token_endpoint_auth_tls_client_auth(env):
    """§1 Metadata MUST: ``token_endpoint`` with ``token_endpoint_auth_methods_supported`` = tls_client_auth."""
    expect(env.metadata.get("token_endpoint"), "no token_endpoint")
    expect(env.metadata.get("token_endpoint_auth_methods_supported") == ["tls_client_auth"],
           f"token_endpoint_auth_methods_supported: {env.metadata.get('token_endpoint_auth_methods_supported')}")


@test
def test_metadata_revocation_endpoint_auth_tls_client_auth(env):
    """§1 Metadata MUST: ``revocation_endpoint`` with ``revocation_endpoint_auth_methods_supported`` = tls_client_auth."""
    expect(env.metadata.get("revocation_endpoint"), "no revocation_endpoint")
    expect(env.metadata.get("revocation_endpoint_auth_methods_supported") == ["tls_client_auth"],
           f"revocation_endpoint_auth_methods_supported: {env.metadata.get('revocation_endpoint_auth_methods_supported')}")


@test
def test_metadata_code_challenge_method_s256(env):
    """§1 Metadata MUST: ``code_challenge_methods_supported`` = S256."""
    expect(env.metadata.get("code_challenge_methods_supported") == ["S256"],
           f"code_challenge_methods_supported: {env.metadata.get('code_challenge_methods_supported')}")


@test
def test_metadata_grant_types_authorization_code(env):
    """§1 Metadata MUST: ``grant_types_supported`` has authorization_code (and refresh_token, ⚠ in the example only); no other grant."""
    grants = env.metadata.get("grant_types_supported") or []
    expect("authorization_code" in grants, f"grant_types_supported: {grants}")
    expect(set(grants) <= {"authorization_code", "refresh_token"}, f"other flow types MUST NOT be used: {grants}")


@test
def test_metadata_tls_client_certificate_bound_access_tokens_false(env):
    """§1 Metadata MUST: ``tls_client_certificate_bound_access_tokens`` = false (certificate-bound tokens MUST NOT be used)."""
    expect(env.metadata.get("tls_client_certificate_bound_access_tokens") is False,
           f"tls_client_certificate_bound_access_tokens: {env.metadata.get('tls_client_certificate_bound_access_tokens')!r}")


@test
def test_metadata_scopes_supported_are_smart_miv_scopes(env):
    """§1 Metadata MUST / §2: ``scopes_supported`` lists SMART scopes of the supported MIVs only (plus Device/DeviceMetric)."""
    scopes = env.metadata.get("scopes_supported") or []
    expect(scopes, "no scopes_supported")
    for scope in scopes:
        if scope in ("patient/Device.rs", "patient/DeviceMetric.rs"):
            continue
        expect(scope.startswith("patient/Observation.rs?code:in="), f"not an HDDT SMART scope: {scope}")
        expect(miv_of(scope) in KNOWN_MIVS, f"not an MIV ValueSet: {scope}")


@test
def test_metadata_request_objects_not_supported(env):
    """§1 PAR: the ``request`` parameter (JAR, RFC 9101) MUST NOT be supported; metadata must not claim it."""
    expect(env.metadata.get("request_parameter_supported") in (None, False),
           f"request_parameter_supported: {env.metadata.get('request_parameter_supported')}")


# ---------------------------------------------------------------------------
# §1 Pushed authorization request (RFC 9126) over mTLS
# ---------------------------------------------------------------------------


def main_diga(env):
    return env.digas["A"]


@test
def test_par_requires_mtls_client_certificate(env):
    """§1 Endpoints: ``POST /par`` requires mTLS (``tls_client_auth``); without a certificate it is refused (TLS, 400 or 401)."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    response = refused_at_tls_or(lambda: diga.post("pushed_authorization_request_endpoint", form, diga.session(with_cert=False)), (400, 401))
    if response is not None:
        oauth_error(response, (400, 401), ("invalid_client", "invalid_request"))


@test
def test_par_refuses_unregistered_certificate(env):
    """§1 Client authentication: the certificate is compared byte-exactly with the DiGA-VZ; an unregistered one is refused."""
    diga = main_diga(env)
    cert = make_client_certificate(env.scratch, "never-registered")
    form, _ = diga.par_form(env.scope_for(diga))
    response = refused_at_tls_or(lambda: diga.post("pushed_authorization_request_endpoint", form, diga.session(cert=cert)), (401,))
    if response is not None:
        oauth_error(response, 401, "invalid_client")


@test(ours="a second registered DiGA")
def test_par_refuses_certificate_of_another_diga_entry(env):
    """§1 Client authentication: certificate and client_id MUST belong to the same DiGA-VZ entry (401 invalid_client)."""
    diga, other = env.digas["A"], env.digas["B"]
    form, _ = diga.par_form(env.scope_for(other))
    response = diga.post("pushed_authorization_request_endpoint", form, diga.session(cert=(other.cert, other.key)))
    oauth_error(response, 401, "invalid_client")


@test
def test_par_refuses_unknown_client_id(env):
    """§1 AS errors: a client not registered in the DiGA-VZ gets ``401 invalid_client``."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga), client_id="urn:diga:bfarm:99998")
    oauth_error(diga.post("pushed_authorization_request_endpoint", form), 401, "invalid_client")


@test
def test_par_returns_request_uri_and_expires_in(env):
    """§1 Endpoints / RFC 9126 §2.2: PAR answers 201 with ``request_uri`` and ``expires_in``."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    response = diga.post("pushed_authorization_request_endpoint", form)
    expect(response.status_code == 201, describe(response))
    body = response.json()
    expect(isinstance(body.get("request_uri"), str) and body["request_uri"], "no request_uri")
    expect(isinstance(body.get("expires_in"), int) and body["expires_in"] > 0, f"expires_in: {body.get('expires_in')!r}")


@test
def test_par_refuses_request_object(env):
    """§1 PAR: the ``request`` parameter and JAR (RFC 9101) MUST NOT be supported (400)."""
    diga = main_diga(env)
    fake_jwt = "eyJhbGciOiJub25lIn0.eyJzY29wZSI6InBhdGllbnQvRGV2aWNlLnJzIn0."
    form, _ = diga.par_form(env.scope_for(diga), request=fake_jwt)
    oauth_error(diga.post("pushed_authorization_request_endpoint", form), 400, ("invalid_request", "request_not_supported", "invalid_request_object"))


@test
def test_par_redirect_uri_must_match_exactly(env):
    """§1 redirect_uri MUST exactly match the DiGA-VZ value (strict string compare); a variant is refused (400)."""
    diga = main_diga(env)
    for variant in (diga.redirect_uri + "/", diga.redirect_uri + "?x=1", diga.redirect_uri.upper()):
        form, _ = diga.par_form(env.scope_for(diga), redirect_uri=variant)
        response = diga.post("pushed_authorization_request_endpoint", form)
        expect(response.status_code == 400, f"redirect_uri {variant}: {describe(response)}")


@test
def test_par_requires_pkce_code_challenge(env):
    """§1 Flow: PKCE is required (RFC 9700); a PAR without ``code_challenge`` is refused (400)."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga), code_challenge=None, code_challenge_method=None)
    oauth_error(diga.post("pushed_authorization_request_endpoint", form), 400, "invalid_request")


@test
def test_par_refuses_pkce_plain(env):
    """§1 Flow: PKCE S256 only (``code_challenge_methods_supported`` = S256); ``plain`` is refused (400)."""
    diga = main_diga(env)
    form, verifier = diga.par_form(env.scope_for(diga), code_challenge_method="plain")
    form["code_challenge"] = verifier
    oauth_error(diga.post("pushed_authorization_request_endpoint", form), 400, "invalid_request")


@test
def test_par_refuses_other_response_types(env):
    """§1 Flow: only the authorization code flow; "other flow types MUST NOT be used" (implicit ``token`` refused, 400)."""
    diga = main_diga(env)
    for response_type in ("token", "code token", "id_token"):
        form, _ = diga.par_form(env.scope_for(diga), response_type=response_type)
        response = diga.post("pushed_authorization_request_endpoint", form)
        expect(response.status_code == 400, f"response_type={response_type}: {describe(response)}")


@test
def test_par_refuses_scope_of_unsupported_miv(env):
    """§2 Validation at the AS: a scope beyond the DiGA's DiGA-VZ permissions gets ``400 invalid_scope``."""
    diga = main_diga(env)
    form, _ = diga.par_form(LUNG_SCOPE + " patient/Device.rs")
    oauth_error(diga.post("pushed_authorization_request_endpoint", form), 400, "invalid_scope")


@test(ours="a DiGA registered for fewer MIVs")
def test_par_refuses_miv_not_authorized_for_diga(env):
    """§2 Validation at the AS: every ``code:in`` ValueSet must match the DiGA's DiGA-VZ MIVs (CGM-only DiGA asks for blood glucose: 400 invalid_scope)."""
    diga = env.digas["B"]
    form, _ = diga.par_form(BG_SCOPE)
    oauth_error(diga.post("pushed_authorization_request_endpoint", form), 400, "invalid_scope")


@test
def test_par_refuses_malformed_or_write_scopes(env):
    """§2: scopes must be valid SMART v2, read and search only (``.rs``); others are refused with 400 invalid_scope."""
    diga = main_diga(env)
    for scope in (
        "patient/*.rs",
        "user/Observation.rs",
        "patient/Observation.cruds?code:in=" + VS_BASE + CGM_MIV,
        "patient/Patient.rs",
        "patient/Observation.rs",
        "openid",
        f"{CGM_SCOPE} {CGM_SCOPE}",
        f"patient/Observation.rs?code:in={VS_BASE}{CGM_MIV},{VS_BASE}{BG_MIV}",
    ):
        form, _ = diga.par_form(scope)
        response = diga.post("pushed_authorization_request_endpoint", form)
        expect(response.status_code == 400 and response.json().get("error") == "invalid_scope",
               f"scope {scope!r}: {describe(response)}")


@test
def test_par_refuses_repeated_parameter(env):
    """RFC 9126 §2.1 / RFC 6749 §3.1: request parameters MUST NOT be included more than once (400 invalid_request)."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    pairs = list(form.items()) + [("redirect_uri", "https://attacker.example/cb")]
    response = diga.http.post(env.metadata["pushed_authorization_request_endpoint"], data=pairs, timeout=30)
    oauth_error(response, 400, "invalid_request")


# ---------------------------------------------------------------------------
# §1 Authorization endpoint (browser, no mTLS)
# ---------------------------------------------------------------------------


@test
def test_authorize_requires_pushed_request(env):
    """§1 Flow: PAR is required; ``GET /authorize`` with plain parameters and no ``request_uri`` issues no code."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    browser = browser_session(env)
    response = browser.get(env.metadata["authorization_endpoint"], params=form, allow_redirects=False, timeout=30)
    location = response.headers.get("Location", "")
    expect("code=" not in location, f"a code was issued without PAR: {location}")
    expect(response.status_code >= 400 or location.startswith(diga.redirect_uri),
           f"want an error, got {describe(response)}")


@test
def test_authorize_refuses_unknown_request_uri(env):
    """§1 Endpoints / RFC 9126 §4: an unknown ``request_uri`` is refused (400); no code."""
    diga = main_diga(env)
    browser = browser_session(env)
    response = browser.get(
        env.metadata["authorization_endpoint"],
        params={"client_id": diga.client_id, "request_uri": "urn:uuid:00000000-0000-4000-8000-000000000000"},
        allow_redirects=False, timeout=30,
    )
    expect("code=" not in response.headers.get("Location", ""), "a code was issued")
    expect(400 <= response.status_code < 500, describe(response))


@test
def test_authorize_request_uri_bound_to_client(env):
    """RFC 9126 §4: the ``request_uri`` is bound to the client that pushed it; another client_id is refused."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    request_uri = diga.post("pushed_authorization_request_endpoint", form).json()["request_uri"]
    browser = browser_session(env)
    response = browser.get(
        env.metadata["authorization_endpoint"],
        params={"client_id": "urn:diga:bfarm:99997", "request_uri": request_uri},
        allow_redirects=False, timeout=30,
    )
    expect("code=" not in response.headers.get("Location", ""), "a code was issued")
    expect(400 <= response.status_code < 500, describe(response))


@test
def test_authorize_needs_no_client_certificate(env):
    """§1 Endpoints: ``GET /authorize`` is opened by the patient's browser without mTLS."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    request_uri = diga.post("pushed_authorization_request_endpoint", form).json()["request_uri"]
    browser = browser_session(env)
    response = browser.get(diga.authorization_url(request_uri), allow_redirects=False, timeout=30)
    expect(response.status_code in (200, 302, 303), describe(response))


@test
def test_request_uri_is_single_use(env):
    """Pairing refusal (RFC 9126 §4 SHOULD; medvault: one use): a ``request_uri`` whose consent is done cannot be opened again."""
    diga = main_diga(env)
    form, _ = diga.par_form(env.scope_for(diga))
    request_uri = diga.post("pushed_authorization_request_endpoint", form).json()["request_uri"]
    url = diga.authorization_url(request_uri)
    redirect = env.consent(url, "approve", [m for m in map(miv_of, form["scope"].split()) if m], "primary")
    env.forget_pairing("A", "primary")
    expect(query_value(redirect, "code"), "no code")
    again = browser_session(env).get(url, allow_redirects=False, timeout=30)
    expect("code=" not in again.headers.get("Location", ""), "a second code")
    expect(again.status_code >= 400, f"reopened: {describe(again)}")


@test
def test_authorization_response_returns_code_and_state(env):
    """§1 Endpoints: ``302`` to ``redirect_uri?code=…&state=…`` with the ``state`` sent in the PAR."""
    diga = main_diga(env)
    redirect, _, state = diga.authorize(env.scope_for(diga))
    expect(redirect.startswith(diga.redirect_uri + "?"), f"not the registered redirect_uri: {redirect[:120]}")
    expect(query_value(redirect, "code"), "no code")
    expect(query_value(redirect, "state") == state, "state not returned unchanged")


@test
def test_authorization_response_iss_matches_issuer(env):
    """RFC 9207 §2: an AS that advertises ``authorization_response_iss_parameter_supported`` MUST send ``iss`` = its issuer on every authorization response."""
    if not env.metadata.get("authorization_response_iss_parameter_supported"):
        raise Skip("the AS does not advertise the iss parameter")
    diga = main_diga(env)
    for decision in ("approve", "deny"):
        redirect, _, _ = diga.authorize(env.scope_for(diga), decision=decision)
        expect(query_value(redirect, "iss") == env.metadata["issuer"], f"{decision}: iss {query_value(redirect, 'iss')!r}")


@test
def test_fhir_responses_are_fhir_json(env):
    """§4 General (FHIR R4 http): JSON responses carry ``Content-Type: application/fhir+json`` (with fhirVersion 4.0 if any)."""
    response = main_diga(env).fhir("GET", "Observation?_count=1", env.main_token()["access_token"])
    kind = response.headers.get("Content-Type", "")
    expect(kind.startswith("application/fhir+json"), f"Content-Type {kind!r}")
    expect("fhirversion" not in kind.lower() or "fhirversion=4.0" in kind.lower().replace(" ", ""), f"Content-Type {kind!r}")


@test
def test_denied_consent_issues_no_code(env):
    """§1 / §2 Consent: consent is recorded before any token; a patient's denial redirects with ``error=access_denied`` and no code."""
    diga = main_diga(env)
    redirect, _, state = diga.authorize(env.scope_for(diga), decision="deny")
    expect(query_value(redirect, "code") is None, "a code was issued after denial")
    expect(query_value(redirect, "error") == "access_denied", f"error: {query_value(redirect, 'error')}")
    expect(query_value(redirect, "state") == state, "state not returned")


# ---------------------------------------------------------------------------
# §1 Token endpoint
# ---------------------------------------------------------------------------


def fresh_code(env, diga=None, patient="primary"):
    diga = diga or main_diga(env)
    redirect, verifier, _ = diga.authorize(env.scope_for(diga), patient=patient)
    return query_value(redirect, "code"), verifier


def code_form(diga, code, verifier, **overrides):
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": diga.redirect_uri,
        "client_id": diga.client_id,
    }
    for name, value in overrides.items():
        if value is None:
            form.pop(name, None)
        else:
            form[name] = value
    return form


@test
def test_token_requires_mtls_client_certificate(env):
    """§1 Endpoints: ``POST /token`` requires mTLS; without a certificate it is refused (TLS, 400 or 401)."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    response = refused_at_tls_or(lambda: diga.post("token_endpoint", code_form(diga, code, verifier), diga.session(with_cert=False)), (400, 401))
    if response is not None:
        oauth_error(response, (400, 401), ("invalid_client", "invalid_request"))


@test
def test_token_requires_pkce_s256(env):
    """§1 Flow: PKCE S256; a wrong ``code_verifier`` gets 400 invalid_grant (RFC 7636 §4.6)."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    wrong = verifier[:-4] + ("AAAA" if not verifier.endswith("AAAA") else "BBBB")
    oauth_error(diga.post("token_endpoint", code_form(diga, code, wrong)), 400, "invalid_grant")


@test
def test_token_requires_code_verifier(env):
    """§1 Endpoints: the token request MUST carry ``code_verifier``; without it: 400."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    oauth_error(diga.post("token_endpoint", code_form(diga, code, verifier, code_verifier=None)), 400, ("invalid_request", "invalid_grant"))


@test
def test_token_redirect_uri_must_match(env):
    """§1 redirect_uri strict match (RFC 9700, RFC 6749 §4.1.3): another ``redirect_uri`` at /token is refused (400)."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    response = diga.post("token_endpoint", code_form(diga, code, verifier, redirect_uri=diga.redirect_uri + "/other"))
    oauth_error(response, 400, ("invalid_grant", "invalid_request"))
    code, verifier = fresh_code(env)
    response = diga.post("token_endpoint", code_form(diga, code, verifier, redirect_uri=None))
    oauth_error(response, 400, ("invalid_grant", "invalid_request"))


@test
def test_token_refuses_client_id_not_matching_certificate(env):
    """§1 Client authentication: certificate and client_id must be the same DiGA-VZ entry at /token too (401 invalid_client)."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    response = diga.post("token_endpoint", code_form(diga, code, verifier, client_id="urn:diga:bfarm:99996"))
    oauth_error(response, 401, "invalid_client")


@test
def test_token_code_is_single_use(env):
    """RFC 6749 §4.1.2 / RFC 9700: an authorization code MUST NOT be used twice (400 invalid_grant)."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    first = diga.post("token_endpoint", code_form(diga, code, verifier))
    expect(first.status_code == 200, f"first use: {describe(first)}")
    oauth_error(diga.post("token_endpoint", code_form(diga, code, verifier)), 400, "invalid_grant")


@test(ours="a second registered DiGA")
def test_token_code_bound_to_client(env):
    """RFC 6749 §4.1.3: a code issued to one DiGA is refused for another (400 invalid_grant)."""
    diga, other = env.digas["A"], env.digas["B"]
    code, verifier = fresh_code(env, diga)
    response = other.post("token_endpoint", code_form(other, code, verifier))
    oauth_error(response, 400, ("invalid_grant", "invalid_request"))


@test
def test_token_response_has_required_fields(env):
    """§1 Endpoints: the token response has ``access_token``, ``refresh_token``, ``token_type`` Bearer, ``expires_in``, ``scope`` and ``sub`` (Pairing ID)."""
    token = env.main_token()
    for field in ("access_token", "refresh_token", "token_type", "expires_in", "scope", "sub"):
        expect(token.get(field), f"no {field}")
    expect(token["token_type"].lower() == "bearer", f"token_type {token['token_type']}")
    expect(isinstance(token["expires_in"], int) and token["expires_in"] > 0, f"expires_in {token['expires_in']!r}")


@test
def test_token_response_not_cacheable(env):
    """RFC 6749 §5.1: a response with tokens MUST carry ``Cache-Control: no-store``."""
    diga = main_diga(env)
    code, verifier = fresh_code(env)
    response = diga.post("token_endpoint", code_form(diga, code, verifier))
    expect(response.status_code == 200, describe(response))
    expect("no-store" in response.headers.get("Cache-Control", ""), f"Cache-Control {response.headers.get('Cache-Control')!r}")


@test
def test_token_scope_within_requested_smart_scopes(env):
    """§2 / HDDT "SMART scopes MUST be used consistently" across request and token response: granted ⊆ requested."""
    token = env.main_token()
    requested = set(env.scope_for(main_diga(env)).split())
    granted = set(token["scope"].split())
    expect(granted and granted <= requested, f"granted {granted - requested} not requested")


@test
def test_token_refuses_other_grant_types(env):
    """§1 Flow: "other flow types MUST NOT be used": client_credentials and password are refused (400 unauthorized_client / unsupported_grant_type)."""
    diga = main_diga(env)
    for form in (
        {"grant_type": "client_credentials", "client_id": diga.client_id, "scope": "patient/Device.rs"},
        {"grant_type": "password", "client_id": diga.client_id, "username": "x", "password": "y"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "client_id": diga.client_id, "assertion": "x.y.z"},
    ):
        oauth_error(diga.post("token_endpoint", form), 400, ("unauthorized_client", "unsupported_grant_type"))


# ---------------------------------------------------------------------------
# §1 Tokens
# ---------------------------------------------------------------------------


@test
def test_access_token_is_signed_jwt_not_encrypted(env):
    """§1 Tokens: tokens MUST be cryptographically signed by the AS and MUST NOT be encrypted (a JWS, alg not ``none``)."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("the access token is opaque; its signature cannot be seen from outside")
    header, _ = jwt_parts(access)
    expect(header.get("alg") and header["alg"].lower() != "none", f"alg {header.get('alg')}")
    expect("enc" not in header, "encrypted")


@test
def test_access_token_sub_is_pairing_id(env):
    """§1 Tokens / §3: a JWT's ``sub`` MUST be the Pairing ID (the token response's ``sub``)."""
    token = env.main_token()
    if not is_jwt(token["access_token"]):
        raise Skip("opaque access token")
    _, claims = jwt_parts(token["access_token"])
    expect(claims.get("sub") == token["sub"], f"sub {claims.get('sub')!r} != {token['sub']!r}")


@test
def test_access_token_has_issuer_expiry_and_not_before(env):
    """§1 Tokens / RS errors ('Invalid token issuer', 'expired', 'cannot be used yet'): the JWT has ``iss`` (the issuer), ``exp`` and ``nbf``."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("opaque access token")
    _, claims = jwt_parts(access)
    expect(claims.get("iss") == env.metadata["issuer"], f"iss {claims.get('iss')!r}")
    now = now_utc().timestamp()
    expect(isinstance(claims.get("exp"), (int, float)) and claims["exp"] > now, f"exp {claims.get('exp')!r}")
    expect(isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] <= now + 60, f"nbf {claims.get('nbf')!r}")


@test
def test_access_token_not_certificate_bound(env):
    """§1 Tokens: certificate-bound tokens (RFC 8705 §3, ``cnf``) MUST NOT be used."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("opaque access token")
    _, claims = jwt_parts(access)
    expect("cnf" not in claims, f"cnf claim: {claims.get('cnf')}")


@test
def test_access_token_holds_no_patient_identity(env):
    """§1 Tokens / HDDT: "data enabling patient identification MUST NOT appear in the token" (no UID, email)."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("opaque access token")
    _, claims = jwt_parts(access)
    text = json.dumps(claims).lower()
    hits = [label for label, value in env.identities.items() if value and value.lower() in text]
    expect(not hits, f"found {hits}")
    expect(not privacy.kvnr_hits(json.dumps(claims).encode()), "a KVNR-shaped claim")


@test
def test_access_token_signature_verifies_against_published_jwks(env):
    """§1 Tokens: signed by the AS. Verified with jwcrypto against ``jwks_uri`` when the DDR publishes one (HDDT requires none)."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("opaque access token")
    uri = env.metadata.get("jwks_uri")
    if not uri:
        raise Skip("the metadata has no jwks_uri (HDDT requires none); the RS's refusal of a forged signature is tested instead")
    keys = jwk.JWKSet.from_json(requests.get(uri, verify=env.ca_file, timeout=30).text)
    token = jws.JWS()
    token.deserialize(access)
    token.verify(keys)


@test
def test_refresh_token_is_signed_not_encrypted(env):
    """§1 Tokens: the refresh token too MUST be signed and MUST NOT be encrypted."""
    refresh = env.main_token()["refresh_token"]
    if not is_jwt(refresh):
        raise Skip("opaque refresh token")
    header, _ = jwt_parts(refresh)
    expect(header.get("alg") and header["alg"].lower() != "none", f"alg {header.get('alg')}")


@test
def test_refresh_token_lifetime_30_days(env):
    """§1 Tokens: refresh token lifetime MUST be 30 days (read from a JWT refresh token's ``exp``)."""
    refresh = env.main_token()["refresh_token"]
    if not is_jwt(refresh):
        raise Skip("opaque refresh token")
    _, claims = jwt_parts(refresh)
    expect("exp" in claims, "no exp")
    days = (claims["exp"] - now_utc().timestamp()) / 86400
    expect(29.9 <= days <= 30.1, f"expires in {days:.2f} days")


def forged(access):
    head, payload, signature = access.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


def expect_invalid_token(env, response, where):
    """401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and an OperationOutcome."""
    expect(response.status_code == 401, f"{where}: want 401, got {describe(response)}")
    challenge = response.headers.get("WWW-Authenticate", "")
    expect(challenge.startswith("Bearer") and 'error="invalid_token"' in challenge,
           f"{where}: WWW-Authenticate {challenge!r}")
    body = env.fhir_json(response, where)
    expect(body.get("resourceType") == "OperationOutcome", f"{where}: not an OperationOutcome")


@test
def test_rs_refuses_token_with_forged_signature(env):
    """§1 Tokens: signatures are verified at every exposed endpoint; a changed signature gets 401 invalid_token."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("opaque access token")
    response = main_diga(env).fhir("GET", "Observation?_count=1", forged(access))
    expect_invalid_token(env, response, "forged signature")


@test
def test_rs_refuses_unsigned_token(env):
    """§1 Tokens / RS errors ('Token is not a signed JWT'): an ``alg: none`` token with the same claims gets 401 invalid_token."""
    access = env.main_token()["access_token"]
    if not is_jwt(access):
        raise Skip("opaque access token")
    head, payload, _ = access.split(".")
    none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    response = main_diga(env).fhir("GET", "Observation?_count=1", f"{none_head}.{payload}.")
    expect_invalid_token(env, response, "alg none")


@test(ours="a second registered DiGA")
def test_rs_refuses_token_presented_by_another_diga(env):
    """§4 General: the RS requires mTLS with the DiGA's certificate; another DiGA's certificate with this token gets 401."""
    access = env.main_token()["access_token"]
    other = env.digas["B"]
    response = other.fhir("GET", "Observation?_count=1", access)
    expect_invalid_token(env, response, "token of DiGA A with certificate of DiGA B")


# ---------------------------------------------------------------------------
# §1 Refresh (RFC 6749 §6) and revocation (RFC 7009)
# ---------------------------------------------------------------------------


@test
def test_refresh_rotates_refresh_token(env):
    """§1 Flow / Tokens: refresh-token rotation MUST be supported: a refresh gives a new refresh token; the old one is then refused (400 invalid_grant)."""
    diga = main_diga(env)
    first = diga.pair()
    second = diga.refresh(first["refresh_token"])
    expect(second.get("refresh_token") and second["refresh_token"] != first["refresh_token"], "no new refresh token")
    expect(second.get("access_token"), "no access token")
    old = diga.post("token_endpoint", {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": diga.client_id})
    oauth_error(old, 400, "invalid_grant")


@test
def test_refresh_keeps_pairing_id(env):
    """§3 Pairing ID: stable for the lifetime of the pairing; a refresh returns the same ``sub``."""
    diga = main_diga(env)
    first = diga.pair()
    second = diga.refresh(first["refresh_token"])
    expect(second.get("sub") == first["sub"], f"sub changed: {second.get('sub')!r}")


@test
def test_refresh_requires_mtls_client_certificate(env):
    """§1 Endpoints: the token endpoint (refresh grant too) requires mTLS."""
    diga = main_diga(env)
    token = env.main_token()
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": diga.client_id}
    response = refused_at_tls_or(lambda: diga.post("token_endpoint", form, diga.session(with_cert=False)), (400, 401))
    if response is not None:
        oauth_error(response, (400, 401), ("invalid_client", "invalid_request"))


@test(ours="a second registered DiGA")
def test_refresh_token_bound_to_client(env):
    """RFC 6749 §6: a refresh token is bound to the client it was issued to; another DiGA gets 400 invalid_grant."""
    diga, other = env.digas["A"], env.digas["B"]
    token = diga.pair()
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": other.client_id}
    oauth_error(other.post("token_endpoint", form), (400, 401), ("invalid_grant", "invalid_client"))


@test
def test_revoke_unknown_token_is_200_empty(env):
    """§1 Endpoints: ``POST /revoke`` answers 200 with an empty body also when the token is invalid or unknown (RFC 7009 §2.2)."""
    diga = main_diga(env)
    response = diga.revoke("not-a-token-" + "x" * 40)
    expect(response.status_code == 200, describe(response))
    expect(response.content == b"", f"body {response.text[:100]!r}")


@test
def test_revoke_requires_mtls_client_certificate(env):
    """§1 Endpoints: ``POST /revoke`` requires mTLS."""
    diga = main_diga(env)
    token = env.main_token()
    form = {"token": token["refresh_token"], "token_type_hint": "refresh_token", "client_id": diga.client_id}
    response = refused_at_tls_or(lambda: diga.post("revocation_endpoint", form, diga.session(with_cert=False)), (400, 401))
    if response is not None:
        oauth_error(response, (400, 401), ("invalid_client", "invalid_request"))
    check = diga.fhir("GET", "Observation?_count=1", token["access_token"])
    expect(check.status_code == 200, f"the pairing no longer works: {describe(check)}")


@test
def test_revoked_pairing_next_request_401(env):
    """§1 Revoke / §3 Unpairing: revocation invalidates the refresh token, every access token of the grant and the consent: RS 401 invalid_token, /token 400 invalid_grant."""
    diga = main_diga(env)
    token = diga.pair()
    before = diga.fhir("GET", "Observation?_count=1", token["access_token"])
    expect(before.status_code == 200, f"before: {describe(before)}")
    revoked = diga.revoke(token["refresh_token"])
    expect(revoked.status_code == 200, f"revoke: {describe(revoked)}")
    expect_invalid_token(env, diga.fhir("GET", "Observation?_count=1", token["access_token"]), "after revocation")
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": diga.client_id}
    oauth_error(diga.post("token_endpoint", form), 400, "invalid_grant")


@test
def test_401_carries_www_authenticate_invalid_token(env):
    """§4 RS errors: 401 with ``WWW-Authenticate: Bearer error="invalid_token", error_description=…`` and an OperationOutcome."""
    response = main_diga(env).fhir("GET", "Observation", "not-a-token")
    expect_invalid_token(env, response, "garbage token")
    challenge = response.headers.get("WWW-Authenticate", "")
    expect('error_description="Token is not a signed JWT"' in challenge, f"error_description: {challenge!r}")


# ---------------------------------------------------------------------------
# §3 Pairing ID
# ---------------------------------------------------------------------------


def spare_diga(env):
    """DiGA B on our server (keeps A's main pairing untouched), else A."""
    return env.digas.get("B", main_diga(env))


@test
def test_pairing_id_stable_for_same_patient_and_diga(env):
    """§3: the Pairing ID is stable and reused ("locate pairing ID if previously generated"): pairing again gives the same ``sub``."""
    diga = spare_diga(env)
    first = diga.pair()
    second = diga.pair()
    expect(first["sub"] == second["sub"], f"{first['sub']} != {second['sub']}")


@test(ours="a second registered DiGA")
def test_pairing_id_distinct_per_diga(env):
    """§3: the Pairing ID is distinct per DiGA (same patient, two DiGAs: two Pairing IDs)."""
    expect(env.digas["B"].pair()["sub"] != env.main_token()["sub"], "same Pairing ID for two DiGAs")


@test(ours="a second test patient")
def test_pairing_id_distinct_per_patient(env):
    """§3: the Pairing ID is unique per patient (same DiGA, two patients: two Pairing IDs)."""
    other = main_diga(env).pair(patient="secondary")
    expect(other["sub"] != env.main_token()["sub"], "same Pairing ID for two patients")


@test
def test_pairing_id_long_and_not_identifying(env):
    """§3: "sufficiently long and unpredictable", no inference about the patient (>= 128 bits, no UID or email)."""
    sub = env.main_token()["sub"]
    expect(len(sub) >= 32, f"only {len(sub)} characters")
    for label, value in env.identities.items():
        expect(value.lower() not in sub.lower(), f"contains the {label}")


# ---------------------------------------------------------------------------
# §2 Consent granularity and scope enforcement
# ---------------------------------------------------------------------------


@test
def test_token_limited_to_consented_mivs(env):
    """§2 Consent granularity: each MIV is separately selectable; tokens are limited to the consented scopes (CGM approved, blood glucose not)."""
    diga = env.digas.get("C", main_diga(env))
    scope = env.scope_for(diga)
    if BG_SCOPE not in scope.split() or CGM_SCOPE not in scope.split():
        raise Skip("the DiGA does not ask for both glucose MIVs")
    token = diga.pair(scope=scope, mivs=[CGM_MIV])
    expect(BG_SCOPE not in token["scope"].split(), f"token scope has blood glucose: {token['scope']}")
    expect(CGM_SCOPE in token["scope"].split(), f"token scope lacks CGM: {token['scope']}")
    found = bundle_observations(env, diga, token["access_token"], "Observation?_count=200")
    codes = set().union(*map(codes_of, found)) if found else set()
    expect(not codes & BG_CODES, f"blood glucose served: {codes & BG_CODES}")


# ---------------------------------------------------------------------------
# §4 FHIR resource server
# ---------------------------------------------------------------------------


def capability(env):
    response = requests.get(f"{env.fhir_base}/metadata", verify=env.ca_file, headers={"Accept": FHIR_JSON}, timeout=30)
    env.recorder.hook(response)
    expect(response.status_code == 200, f"GET /metadata: {describe(response)}")
    return env.fhir_json(response, "GET /metadata")


def rest_resources(statement):
    return {resource["type"]: resource for rest in statement.get("rest", []) for resource in rest.get("resource", [])}


@test
def test_capability_statement_is_public(env):
    """§4 General: ``GET /metadata`` is public (no certificate, no token) and returns a CapabilityStatement."""
    expect(capability(env).get("resourceType") == "CapabilityStatement", "not a CapabilityStatement")


@test
def test_capability_statement_declares_fhir_4_0_1_json_and_xml(env):
    """§4 General / CapabilityStatement MUST: FHIR 4.0.1; JSON and XML MUST be supported."""
    statement = capability(env)
    expect(statement.get("fhirVersion") == "4.0.1", f"fhirVersion {statement.get('fhirVersion')}")
    formats = set(statement.get("format", []))
    expect(formats & {"json", "application/fhir+json"} and formats & {"xml", "application/fhir+xml"}, f"format {formats}")


@test
def test_capability_statement_declares_resources_interactions_search_params(env):
    """§4 CapabilityStatement MUST: Observation, Device, DeviceMetric with profiles, interactions (read, search) and the search params."""
    resources = rest_resources(capability(env))
    for kind in ("Observation", "Device", "DeviceMetric"):
        expect(kind in resources, f"no {kind}")
        interactions = {i.get("code") for i in resources[kind].get("interaction", [])}
        expect({"read", "search-type"} <= interactions, f"{kind} interactions {interactions}")
    expect(resources["Observation"].get("supportedProfile"), "no supportedProfile for Observation")
    params = {p.get("name") for p in resources["Observation"].get("searchParam", [])}
    expect({"code", "date"} <= params, f"Observation searchParam {params}")
    params = {p.get("name") for p in resources["Device"].get("searchParam", [])}
    expect({"device-name", "type", "manufacturer"} <= params, f"Device searchParam {params}")


@test
def test_capability_statement_declares_every_supported_search_param(env):
    """§4 CapabilityStatement MUST declare all supported search params (including extras): each one this suite uses successfully is listed."""
    resources = rest_resources(capability(env))
    used = {
        "Observation": {"code", "date", "_id", "_lastUpdated", "value-quantity"},
        "Device": {"type", "device-name", "manufacturer", "_id"},
        "DeviceMetric": {"_id", "source"},
    }
    for kind, names in used.items():
        declared = {p.get("name") for p in resources.get(kind, {}).get("searchParam", [])}
        expect(names <= declared, f"{kind} does not declare {sorted(names - declared)}")


@test
def test_capability_statement_declares_cgm_summary_operation(env):
    """§4 CapabilityStatement MUST: the operation ``hddt-cgm-summary`` with its OperationDefinition canonical."""
    observation = rest_resources(capability(env)).get("Observation", {})
    operations = {(op.get("name"), op.get("definition")) for op in observation.get("operation", [])}
    expect(("hddt-cgm-summary", "https://gematik.de/fhir/hddt/OperationDefinition/hddt-cgm-summary-operation") in operations,
           f"operations {operations}")


@test
def test_fhir_patient_endpoint_absent(env):
    """§4 General / HDDT privacy: there MUST NOT be a ``/Patient`` endpoint (no Patient in the CapabilityStatement, 404 on read and search)."""
    expect("Patient" not in rest_resources(capability(env)), "Patient in the CapabilityStatement")
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    for path in ("Patient", f"Patient/{env.main_token()['sub']}", "Patient?_id=1"):
        response = diga.fhir("GET", path, token)
        expect(response.status_code == 404, f"GET {path}: {describe(response)}")


@test
def test_fhir_requires_mtls_client_certificate(env):
    """§4 General / RS error catalogue: the RS requires mTLS with the DiGA certificate as well as the token; refused at TLS or with 401 and, like every RS error, an OperationOutcome."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    response = refused_at_tls_or(lambda: diga.fhir("GET", "Observation?_count=1", token, session=diga.session(with_cert=False)), (401,))
    if response is not None:
        expect_outcome(env, response, 401, "no client certificate")


@test
def test_fhir_requires_bearer_token(env):
    """§4 General: every call needs ``Authorization: Bearer``; without it: 401 with a Bearer challenge."""
    response = main_diga(env).fhir("GET", "Observation?_count=1", None)
    expect(response.status_code == 401, describe(response))
    expect(response.headers.get("WWW-Authenticate", "").startswith("Bearer"), "no Bearer challenge")


@test
def test_observation_search_returns_searchset_bundle(env):
    """§4 Required interactions: Observation search-type (GET) returns a searchset Bundle."""
    diga = main_diga(env)
    response = diga.fhir("GET", "Observation?_count=20", env.main_token()["access_token"])
    expect(response.status_code == 200, describe(response))
    bundle = env.fhir_json(response, "Observation search")
    expect(bundle.get("resourceType") == "Bundle" and bundle.get("type") == "searchset", "not a searchset Bundle")
    if env.ours:
        expect(observations(bundle.get("entry", [])), "no Observation (the patient has data)")


@test
def test_observation_search_via_post(env):
    """§4 Required interactions: Observation search-type also by ``POST Observation/_search`` (form body): same result as GET."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    query = {"_count": "20", "_sort": "-date"}
    got = bundle_observations(env, diga, token, "Observation?_count=20&_sort=-date")
    response = diga.fhir("POST", "Observation/_search", token, data=query,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    expect(response.status_code == 200, describe(response))
    posted = observations(env.fhir_json(response, "POST _search").get("entry", []))
    expect([o["id"] for o in posted] == [o["id"] for o in got], "POST _search differs from GET")


@test
def test_observations_only_of_granted_mivs(env):
    """§2 RS enforcement: only Observations whose code is in the token's MIV ValueSets."""
    diga = main_diga(env)
    token = env.main_token()
    allowed = set()
    if BG_SCOPE in token["scope"].split():
        allowed |= BG_CODES
    if CGM_SCOPE in token["scope"].split():
        allowed |= CGM_CODES
    found = observations(env.search_all(diga, token["access_token"], "Observation?_count=500"))
    expect(found or not env.ours, "no Observation")
    for observation in found:
        expect(codes_of(observation) & allowed, f"Observation/{observation.get('id')} code {codes_of(observation)}")


def some_observation(env, diga, token, codes):
    for observation in bundle_observations(env, diga, token, "Observation?_count=200&_sort=-date"):
        if codes_of(observation) & codes:
            return observation
    raise Skip(f"no Observation with a code of {sorted(codes)} to read")


@test
def test_observation_read(env):
    """§4 Required interactions: Observation ``read`` returns the resource found by search."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    observation = some_observation(env, diga, token, BG_CODES | CGM_CODES)
    response = diga.fhir("GET", f"Observation/{observation['id']}", token)
    expect(response.status_code == 200, describe(response))
    read = env.fhir_json(response, "Observation read")
    expect(read.get("id") == observation["id"], "another id")


@test
def test_empty_search_is_200_empty_bundle(env):
    """§4 Empty result: 200 with an empty searchset Bundle (MUST)."""
    later = fhir_instant(now_utc() + datetime.timedelta(days=3))
    response = main_diga(env).fhir("GET", f"Observation?date=gt{later}", env.main_token()["access_token"])
    expect(response.status_code == 200, describe(response))
    bundle = env.fhir_json(response, "empty search")
    expect(bundle.get("type") == "searchset", "not a searchset")
    expect(not observations(bundle.get("entry", [])), "not empty")


@test
def test_code_outside_value_set_returns_empty_bundle(env):
    """§4 Empty result: a ``code`` outside the granted ValueSets returns 200 and no Observation (blood pressure code)."""
    response = main_diga(env).fhir("GET", "Observation?code=http://loinc.org|85354-9", env.main_token()["access_token"])
    expect(response.status_code == 200, describe(response))
    expect(not observations(env.fhir_json(response, "code outside VS").get("entry", [])), "Observations returned")


@test
def test_read_unknown_observation_404(env):
    """§4 RS errors: ``404 Resource … is not known`` as an OperationOutcome for an unknown id."""
    response = main_diga(env).fhir("GET", "Observation/0000000000000000deadbeef00000000", env.main_token()["access_token"])
    body = expect_outcome(env, response, 404, "unknown Observation")
    expect("is not known" in outcome_issue_text(body), f"diagnostics: {outcome_issue_text(body)}")


@test(ours="a second test patient")
def test_read_other_patients_observation_404(env):
    """§2 RS enforcement: only the Observations of the patient mapped from the Pairing ID; another patient's: 404 (never 403)."""
    diga = main_diga(env)
    other = diga.pair(patient="secondary")
    observation = some_observation(env, diga, other["access_token"], BG_CODES | CGM_CODES)
    response = diga.fhir("GET", f"Observation/{observation['id']}", env.main_token()["access_token"])
    expect_outcome(env, response, 404, "another patient's Observation")


@test(ours="a DiGA registered for fewer MIVs")
def test_read_observation_outside_granted_miv_404(env):
    """§2 / §4 RS errors: an Observation of an MIV the token does not grant is "not known": 404, 403 is not used."""
    token = env.main_token()["access_token"]
    observation = some_observation(env, main_diga(env), token, BG_CODES)
    cgm_only = env.digas["B"].pair()
    response = env.digas["B"].fhir("GET", f"Observation/{observation['id']}", cgm_only["access_token"])
    expect_outcome(env, response, 404, "blood glucose with a CGM-only token")


@test(ours="a DiGA registered for fewer MIVs and the meter's id")
def test_device_only_if_referenced_by_granted_observation(env):
    """§2 RS enforcement: Device/DeviceMetric only if an authorized Observation references them (the meter is hidden from a CGM-only DiGA)."""
    meter = env.ours.patients["primary"]["meter"]
    full = main_diga(env).fhir("GET", f"Device/{meter}", env.main_token()["access_token"])
    expect(full.status_code == 200, f"meter with the blood glucose grant: {describe(full)}")
    env.fhir_json(full, "Device read")
    cgm_only = env.digas["B"].pair()
    response = env.digas["B"].fhir("GET", f"Device/{meter}", cgm_only["access_token"])
    expect_outcome(env, response, 404, "meter with a CGM-only token")
    devices = env.search_all(env.digas["B"], cgm_only["access_token"], "Device?_count=100")
    expect(meter not in {e["resource"].get("id") for e in devices}, "meter in the Device search")


@test
def test_search_with_subject_is_400_or_ignored(env):
    """§4 Search parameters: an explicit ``subject`` MUST be ignored and SHOULD give 400 (never widens the result)."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    response = diga.fhir("GET", "Observation?subject=Patient/other&_count=20", token)
    if response.status_code == 400:
        env.fhir_json(response, "subject 400")
        return
    expect(response.status_code == 200, describe(response))
    plain = bundle_observations(env, diga, token, "Observation?_count=20")
    got = observations(env.fhir_json(response, "subject ignored").get("entry", []))
    expect([o["id"] for o in got] == [o["id"] for o in plain], "subject changed the result")


@test
def test_device_search_with_patient_is_400_or_ignored(env):
    """§4 Search parameters: ``patient`` on Device, same rule as ``subject`` (ignored, SHOULD 400)."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    response = diga.fhir("GET", "Device?patient=Patient/other", token)
    expect(response.status_code in (200, 400), describe(response))
    env.fhir_json(response, "Device?patient")


@test
def test_unknown_search_parameter_400(env):
    """§4 RS errors: 400 ``Unknown search parameter`` as an OperationOutcome."""
    response = main_diga(env).fhir("GET", "Observation?no-such-param=1", env.main_token()["access_token"])
    body = expect_outcome(env, response, 400, "unknown parameter")
    expect("Unknown search parameter" in outcome_issue_text(body), f"diagnostics: {outcome_issue_text(body)}")


@test
def test_invalid_date_400(env):
    """§4 RS errors: 400 ``Invalid date/time format or date range`` for a bad date."""
    response = main_diga(env).fhir("GET", "Observation?date=ge2026-13-45", env.main_token()["access_token"])
    body = expect_outcome(env, response, 400, "bad date")
    expect("Invalid date/time format or date range" in outcome_issue_text(body), f"diagnostics: {outcome_issue_text(body)}")


@test
def test_invalid_include_400(env):
    """§4 RS errors: 400 ``Invalid _include parameter value`` for a bad ``_include``."""
    response = main_diga(env).fhir("GET", "Observation?_include=Observation:patient", env.main_token()["access_token"])
    body = expect_outcome(env, response, 400, "bad _include")
    expect("Invalid _include parameter value" in outcome_issue_text(body), f"diagnostics: {outcome_issue_text(body)}")


@test
def test_unsupported_format_406(env):
    """§4 General: an ``Accept`` of an unsupported format gets 406."""
    response = main_diga(env).fhir("GET", "Observation?_count=1", env.main_token()["access_token"], headers={"Accept": "text/csv"})
    body = expect_outcome(env, response, 406, "Accept text/csv")
    expect(any(i.get("code") == "not-supported" for i in body.get("issue", [])), f"issue code: {outcome_issue_text(body)}")


@test
def test_unsupported_fhir_version_406(env):
    """§4 General: a ``fhirVersion`` mime parameter other than 4.0 gets 406."""
    response = main_diga(env).fhir("GET", "Observation?_count=1", env.main_token()["access_token"],
                                   headers={"Accept": "application/fhir+json; fhirVersion=5.0"})
    body = expect_outcome(env, response, 406, "fhirVersion=5.0")
    expect(any(i.get("code") == "not-supported" for i in body.get("issue", [])), f"issue code: {outcome_issue_text(body)}")
    accepted = main_diga(env).fhir("GET", "Observation?_count=1", env.main_token()["access_token"],
                                   headers={"Accept": "application/fhir+json; fhirVersion=4.0"})
    expect(accepted.status_code == 200, f"fhirVersion=4.0: {describe(accepted)}")


@test
def test_unsupported_content_type_415(env):
    """§4 General: an unsupported ``Content-Type`` gets 415 (POST _search with text/plain)."""
    response = main_diga(env).fhir("POST", "Observation/_search", env.main_token()["access_token"],
                                   data="_count=1", headers={"Content-Type": "text/plain"})
    body = expect_outcome(env, response, 415, "Content-Type text/plain")
    expect(any(i.get("code") == "not-supported" for i in body.get("issue", [])), f"issue code: {outcome_issue_text(body)}")


@test
def test_xml_format_supported(env):
    """§4 General: XML MUST be supported (``Accept: application/fhir+xml`` gives a FHIR XML Bundle)."""
    response = main_diga(env).fhir("GET", "Observation?_count=2", env.main_token()["access_token"],
                                   headers={"Accept": "application/fhir+xml"})
    expect(response.status_code == 200, describe(response))
    expect("xml" in response.headers.get("Content-Type", ""), f"Content-Type {response.headers.get('Content-Type')}")
    root = ElementTree.fromstring(response.content)
    expect(root.tag == "{http://hl7.org/fhir}Bundle", f"root {root.tag}")


@test
def test_include_observation_device(env):
    """§4 Search parameters MUST: ``_include=Observation:device`` adds the referenced Devices/DeviceMetrics (mode include)."""
    diga = main_diga(env)
    response = diga.fhir("GET", "Observation?_count=5&_include=Observation:device&_include:iterate=DeviceMetric:source",
                         env.main_token()["access_token"])
    expect(response.status_code == 200, describe(response))
    entries = env.fhir_json(response, "_include").get("entry", [])
    found = observations(entries)
    if not found:
        raise Skip("no Observation")
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries if e.get("search", {}).get("mode") == "include"}
    for observation in found:
        reference = observation.get("device", {}).get("reference", "")
        kind, _, ident = reference.rpartition("/")
        expect((kind.rsplit("/", 1)[-1], ident) in included, f"{reference} not included")
    # _include:iterate=DeviceMetric:source: the Device behind each included DeviceMetric.
    for entry in entries:
        resource = entry["resource"]
        if resource["resourceType"] == "DeviceMetric":
            source = resource.get("source", {}).get("reference", "")
            expect(("Device", source.rpartition("/")[2]) in included, f"{source} of DeviceMetric/{resource['id']} not included")


@test
def test_sort_by_date_descending_count_1_is_latest(env):
    """§4 Time ranges: latest value by ``_sort=-date&_count=1``."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    latest = bundle_observations(env, diga, token, "Observation?_sort=-date&_count=1")
    expect(len(latest) == 1, f"{len(latest)} entries")
    every = observations(env.search_all(diga, token, "Observation?_count=500"))

    def when(observation):
        return observation.get("effectiveDateTime") or observation.get("effectivePeriod", {}).get("start", "")

    expect(when(latest[0]) == max(map(when, every)), "not the latest")


@test
def test_date_prefixes_restrict_results(env):
    """§4 Search parameters MUST: ``date`` with prefixes (``ge``/``lt``) limits the result."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    since = fhir_instant(now_utc() - datetime.timedelta(hours=6))
    recent = observations(env.search_all(diga, token, f"Observation?date=ge{since}&_count=500"))
    older = observations(env.search_all(diga, token, f"Observation?date=lt{since}&_count=500"))
    every = observations(env.search_all(diga, token, "Observation?_count=500"))
    if env.ours:
        expect(recent and older, "expected readings before and after the cut")
    ids = [o["id"] for o in recent] + [o["id"] for o in older]
    # A chunk that spans the cut matches both ge and lt (FHIR period semantics).
    expect(set(ids) == {o["id"] for o in every}, "ge and lt together are not everything")
    for observation in recent:
        end = observation.get("effectiveDateTime") or observation.get("effectivePeriod", {}).get("end", "")
        expect(end >= since[:16], f"Observation/{observation['id']} ends {end}, before {since}")


@test
def test_paging_next_links_neither_skip_nor_repeat(env):
    """§4 Paging (Bundle link): following ``next`` with a small ``_count`` yields every match exactly once."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    every = [o["id"] for o in observations(env.search_all(diga, token, "Observation?_count=500&_sort=date"))]
    paged = [o["id"] for o in observations(env.search_all(diga, token, "Observation?_count=7&_sort=date", limit=1000))]
    first = diga.fhir("GET", "Observation?_count=7&_sort=date", token)
    expect(len(observations(env.fhir_json(first, "first page").get("entry", []))) <= 7, "a page holds more than _count")
    expect(len(paged) == len(set(paged)), f"{len(paged) - len(set(paged))} repeated")
    expect(set(paged) == set(every), f"{len(set(every) - set(paged))} skipped")
    expect(len(every) > 7 or not env.ours, "too few Observations to page")


@test
def test_observation_search_parameters_accepted(env):
    """§4 Search parameters MUST: Observation ``code``, ``date``, ``_id``, ``_count``, ``_sort``, ``_lastUpdated`` (MUST for CGM), ``value-quantity`` (BG)."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    since = fhir_instant(now_utc() - datetime.timedelta(days=2))
    for query in (
        "Observation?code=http://loinc.org|99504-3",
        f"Observation?code:in={VS_BASE}{CGM_MIV}",
        f"Observation?date=ge{since}",
        "Observation?_id=abc",
        "Observation?_count=3&_sort=date",
        f"Observation?_lastUpdated=ge{since}",
        "Observation?value-quantity=gt100|http://unitsofmeasure.org|mg/dL",
    ):
        response = diga.fhir("GET", query, token)
        expect(response.status_code == 200, f"{query}: {describe(response)}")
        env.fhir_json(response, query)


@test
def test_last_updated_filters_cgm_observations(env):
    """§4 Search parameters: ``_lastUpdated`` (MUST for CGM): nothing was updated after now; everything served was updated since the data arrived."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    later = fhir_instant(now_utc() + datetime.timedelta(hours=1))
    expect(not bundle_observations(env, diga, token, f"Observation?_lastUpdated=gt{later}&code=http://loinc.org|99504-3"), "updated in the future")
    if env.ours:
        since = fhir_instant(now_utc() - datetime.timedelta(hours=3))
        recent = bundle_observations(env, diga, token, f"Observation?_lastUpdated=ge{since}&code=http://loinc.org|99504-3&_count=50")
        expect(recent, "no CGM Observation updated in the last 3 hours (the runner uploaded them)")
        for observation in recent:
            updated = observation.get("meta", {}).get("lastUpdated", "")
            expect(updated >= since[:16], f"Observation/{observation['id']} lastUpdated {updated}")


@test
def test_device_search_parameters_accepted(env):
    """§4 Search parameters MUST: Device ``device-name``, ``type``, ``manufacturer``, ``_id``; DeviceMetric ``_id``, ``source``."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    for query in (
        "Device?device-name=Glukko",
        "Device?type=http://snomed.info/sct|337414009",
        "Device?manufacturer=Glukko",
        "Device?_id=abc",
        "DeviceMetric?_id=abc",
        "DeviceMetric?source=Device/abc",
        "DeviceMetric?_include=DeviceMetric:source",
    ):
        response = diga.fhir("GET", query, token)
        expect(response.status_code == 200, f"{query}: {describe(response)}")
        env.fhir_json(response, query)


@test
def test_device_read_and_vread(env):
    """§4 Required interactions: Device ``read`` and ``vread`` (``_history/<vid>``); an unknown version: 404."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    devices = [e["resource"] for e in env.search_all(diga, token, "Device?_count=50")]
    if not devices:
        raise Skip("no Device")
    device = devices[0]
    response = diga.fhir("GET", f"Device/{device['id']}", token)
    expect(response.status_code == 200, describe(response))
    read = env.fhir_json(response, "Device read")
    version = read.get("meta", {}).get("versionId")
    if not version:
        raise Skip("the DDR does not version Devices (vread MAY be omitted)")
    response = diga.fhir("GET", f"Device/{device['id']}/_history/{version}", token)
    expect(response.status_code == 200, f"vread: {describe(response)}")
    env.fhir_json(response, "Device vread")
    expect_outcome(env, diga.fhir("GET", f"Device/{device['id']}/_history/999999", token), 404, "unknown version")


@test
def test_devicemetric_read_and_search(env):
    """§4 Required interactions: DeviceMetric ``read`` and ``search`` (calibration-requiring CGMs are referenced through one)."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    metrics = [e["resource"] for e in env.search_all(diga, token, "DeviceMetric?_count=50")]
    if not metrics:
        raise Skip("no DeviceMetric")
    response = diga.fhir("GET", f"DeviceMetric/{metrics[0]['id']}", token)
    expect(response.status_code == 200, describe(response))
    metric = env.fhir_json(response, "DeviceMetric read")
    expect(metric.get("source", {}).get("reference"), "no source (1..1)")


@test(ours="the 29-day-old reading the runner uploads")
def test_historic_data_period_at_least_30_days(env):
    """§4 Historic data: at least 30 days for blood glucose (a 29-day-old meter reading is served)."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    cut = fhir_instant(now_utc() - datetime.timedelta(days=28))
    old = bundle_observations(env, diga, token, f"Observation?date=lt{cut}&code=http://loinc.org|2339-0,http://loinc.org|41653-7")
    expect(old, "the 29-day-old reading is not served")


@test
def test_search_before_historic_period_is_200(env):
    """§4 Historic data: a search beyond the period gives 200 with an empty Bundle (optional warning)."""
    before = fhir_instant(now_utc() - datetime.timedelta(days=400))
    response = main_diga(env).fhir("GET", f"Observation?date=lt{before}", env.main_token()["access_token"])
    expect(response.status_code == 200, describe(response))
    expect(not observations(env.fhir_json(response, "before historic period").get("entry", [])), "Observations returned")


@test
def test_blood_glucose_observation_shape(env):
    """§4 Profiles hddt-blood-glucose-measurement: effectiveDateTime 1..1, UCUM mg/dL|mmol/L valueQuantity or dataAbsentReason, device 1..1, LO/HI with comparator."""
    found = [o for o in observations(env.search_all(main_diga(env), env.main_token()["access_token"], "Observation?_count=500")) if codes_of(o) & BG_CODES]
    if not found:
        raise Skip("no blood glucose Observation")
    for observation in found:
        where = f"Observation/{observation['id']}"
        expect(observation.get("effectiveDateTime"), f"{where}: no effectiveDateTime")
        expect(observation.get("device", {}).get("reference"), f"{where}: no device")
        quantity = observation.get("valueQuantity")
        if quantity is None:
            expect(observation.get("dataAbsentReason"), f"{where}: neither value nor dataAbsentReason")
            continue
        expect(quantity.get("system") == UCUM and quantity.get("code") in ("mg/dL", "mmol/L"), f"{where}: {quantity}")
        expect(quantity.get("comparator") in (None, "<", ">"), f"{where}: comparator {quantity.get('comparator')}")
    if env.ours:
        expect(any(o.get("valueQuantity", {}).get("comparator") == ">" for o in found), "the HI reading has no comparator '>'")


def cgm_chunks(env):
    found = [o for o in observations(env.search_all(main_diga(env), env.main_token()["access_token"], "Observation?_count=500&_sort=date")) if codes_of(o) & CGM_CODES]
    if not found:
        raise Skip("no CGM Observation")
    return found


def parse_instant(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@test
def test_cgm_observation_shape(env):
    """§4 Profiles hddt-continuous-glucose-measurement: effectivePeriod start+end, valueSampledData (UCUM origin, data) or dataAbsentReason, device 1..1."""
    for observation in cgm_chunks(env):
        where = f"Observation/{observation['id']}"
        period = observation.get("effectivePeriod", {})
        expect(period.get("start") and period.get("end"), f"{where}: effectivePeriod {period}")
        expect(observation.get("device", {}).get("reference"), f"{where}: no device")
        sampled = observation.get("valueSampledData")
        if sampled is None:
            expect(observation.get("dataAbsentReason"), f"{where}: neither valueSampledData nor dataAbsentReason")
            continue
        origin = sampled.get("origin", {})
        expect(origin.get("system") == UCUM and origin.get("code") in ("mg/dL", "mmol/L"), f"{where}: origin {origin}")
        expect(sampled.get("data"), f"{where}: no data")
        expect(observation.get("status") in OBSERVATION_STATUS, f"{where}: status {observation.get('status')!r} is not an R4 code")
        expect(sampled.get("dimensions") == 1 and sampled.get("period", 0) > 0, f"{where}: dimensions/period {sampled.get('dimensions')}/{sampled.get('period')}")
        tokens = sampled["data"].split()
        for token in tokens:
            expect(token in ("E", "L", "U") or re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", token), f"{where}: data token {token!r}")
        slots = (parse_instant(period["end"]) - parse_instant(period["start"])).total_seconds() * 1000 / sampled["period"]
        expect(len(tokens) <= slots + 1, f"{where}: {len(tokens)} samples in {slots:.0f} slots")


@test
def test_cgm_chunks_have_one_fixed_span(env):
    """§4 CGM chunk rules: the DDR has one fixed chunk span; every chunk's effectivePeriod has it (a preliminary chunk too), only a chunk closed early (final) may be shorter."""
    chunks = cgm_chunks(env)

    def span(observation):
        period = observation["effectivePeriod"]
        return round((parse_instant(period["end"]) - parse_instant(period["start"])).total_seconds())

    spans = collections.Counter(span(o) for o in chunks)
    fixed = spans.most_common(1)[0][0]
    expect(fixed > 0, f"chunk span {fixed} s")
    for observation in chunks:
        where = f"Observation/{observation['id']} ({observation.get('status')})"
        expect(span(observation) <= fixed + 1, f"{where} spans {span(observation)} s, longer than {fixed} s")
        if observation.get("status") == "preliminary":
            expect(abs(span(observation) - fixed) <= 1, f"{where} spans {span(observation)} s, not the full {fixed} s")


@test
def test_cgm_open_chunk_is_preliminary(env):
    """§4 CGM chunk rules: the last, partially filled chunk has status preliminary."""
    chunks = cgm_chunks(env)
    last = max(chunks, key=lambda o: o["effectivePeriod"]["start"])
    if parse_instant(last["effectivePeriod"]["end"]) < now_utc():
        raise Skip("the last chunk has ended (no data in the current span)")
    expect(last.get("status") == "preliminary", f"last chunk status {last.get('status')}")


@test
def test_resources_carry_no_identifying_subject(env):
    """HDDT privacy / §4 General: ``subject`` SHOULD NOT be sent and MUST NOT contain identifying data (no Patient/<uid>, name, email)."""
    diga = main_diga(env)
    entries = env.search_all(diga, env.main_token()["access_token"], "Observation?_count=500&_include=Observation:device&_include:iterate=DeviceMetric:source")
    for entry in entries:
        resource = entry.get("resource", {})
        text = json.dumps(resource.get("subject", {})) + json.dumps(resource.get("patient", {}))
        for label, value in env.identities.items():
            expect(value.lower() not in text.lower(), f"{resource.get('resourceType')}/{resource.get('id')} carries the {label}")


# ---------------------------------------------------------------------------
# §4 $hddt-cgm-summary
# ---------------------------------------------------------------------------


def summary(env, diga, token, parameters):
    body = {"resourceType": "Parameters", "parameter": parameters}
    env.validator.validate(body, SENT)
    return diga.fhir("POST", "Observation/$hddt-cgm-summary", token, data=json.dumps(body),
                     headers={"Content-Type": FHIR_JSON})


def period_parameters(days, end=None, related=None):
    end = end or now_utc()
    parameters = [
        {"name": "effectivePeriodStart", "valueDateTime": fhir_instant(end - datetime.timedelta(days=days))},
        {"name": "effectivePeriodEnd", "valueDateTime": fhir_instant(end)},
    ]
    if related is not None:
        parameters.append({"name": "related", "valueBoolean": related})
    return parameters


def summary_bundle(env, response, where):
    expect(response.status_code == 200, f"{where}: {describe(response)}")
    body = env.fhir_json(response, where)
    if body.get("resourceType") == "Parameters":
        results = [p.get("resource") for p in body.get("parameter", []) if p.get("name") == "result"]
        expect(results, f"{where}: Parameters without result")
        body = results[0]
    return body


@test
def test_device_resources_follow_personal_health_device_profile(env):
    """§4 Profiles hddt-personal-health-device: ``type`` from ValueSet hddt-device-type (SNOMED CT), R4 ``status``, ``definition`` only to the HIIS-VZ."""
    diga = main_diga(env)
    devices = [e["resource"] for e in env.search_all(diga, env.main_token()["access_token"], "Device?_count=50")]
    if not devices:
        raise Skip("no Device")
    for device in devices:
        where = f"Device/{device['id']}"
        codes = {c.get("code") for c in device.get("type", {}).get("coding", []) if c.get("system") == "http://snomed.info/sct"}
        expect(codes & HDDT_DEVICE_TYPES, f"{where}: type {device.get('type')}")
        expect(device.get("status") in (None, *DEVICE_STATUS), f"{where}: status {device.get('status')}")
        definition = device.get("definition")
        if definition:
            text = json.dumps(definition)
            expect("hiis.bfarm.de" in text or "http://fhir.de/sid/gkv/hmnr" in text, f"{where}: definition {definition}")


@test
def test_devicemetric_resources_follow_sensor_profile(env):
    """§4 Profiles hddt-sensor-type-and-calibration-status: ``source`` 1..1 → Device, ``calibration.state`` 1..1, ``category`` measurement, UCUM unit."""
    diga = main_diga(env)
    metrics = [e["resource"] for e in env.search_all(diga, env.main_token()["access_token"], "DeviceMetric?_count=50")]
    if not metrics:
        raise Skip("no DeviceMetric")
    for metric in metrics:
        where = f"DeviceMetric/{metric['id']}"
        expect(metric.get("source", {}).get("reference", "").startswith("Device/"), f"{where}: source {metric.get('source')}")
        expect(all(c.get("state") for c in metric.get("calibration", [])), f"{where}: calibration without state")
        expect(metric.get("category") == "measurement", f"{where}: category {metric.get('category')}")
        units = {c.get("system") for c in metric.get("unit", {}).get("coding", [])}
        expect(not units or UCUM in units, f"{where}: unit {metric.get('unit')}")


@test
def test_write_interactions_refused(env):
    """§0 Architecture: access is read and search only: create, update and delete are refused, and nothing changes."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    observation = some_observation(env, diga, token, BG_CODES | CGM_CODES)
    before = diga.fhir("GET", f"Observation/{observation['id']}", token).json()
    body = json.dumps(dict(observation, status="entered-in-error"))
    for method, path in (("POST", "Observation"), ("PUT", f"Observation/{observation['id']}"),
                         ("DELETE", f"Observation/{observation['id']}"), ("PATCH", f"Observation/{observation['id']}")):
        # A fresh connection each: a server may close one whose request body it did not read.
        response = diga.fhir(method, path, token, session=diga.session(), data=body, headers={"Content-Type": FHIR_JSON})
        expect(400 <= response.status_code < 500, f"{method} {path}: {describe(response)}")
    after = diga.fhir("GET", f"Observation/{observation['id']}", token, session=diga.session()).json()
    expect(after == before, "the Observation changed")


@test
def test_cgm_summary_has_every_metric(env):
    """§4 $hddt-cgm-summary: the summary Observation and every metric (mean glucose, times in ranges, GMI, CV, days of wear, sensor active); unsupported ones with dataAbsentReason."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    bundle = summary_bundle(env, summary(env, main_diga(env), token["access_token"], period_parameters(14)), "summary")
    resources = [e["resource"] for e in bundle.get("entry", [])]
    kinds = {r.get("resourceType") for r in resources}
    expect(kinds <= {"Observation", "Device"}, f"entries other than HL7 CGM Observations and Devices: {kinds}")
    codes = set().union(*(codes_of(r) for r in resources if r.get("resourceType") == "Observation"))
    expect(SUMMARY_CODES <= codes, f"missing {sorted(SUMMARY_CODES - codes)}")
    expect(codes & MEAN_GLUCOSE_CODES, "no mean glucose")
    for resource in resources:
        if resource.get("resourceType") != "Observation":
            continue
        has_value = any(k.startswith("value") for k in resource) or resource.get("component") or resource.get("hasMember")
        expect(has_value or resource.get("dataAbsentReason"), f"Observation {codes_of(resource)} has neither value nor dataAbsentReason")


@test
def test_cgm_summary_returns_collection_bundle(env):
    """§4 $hddt-cgm-summary: ``POST Observation/$hddt-cgm-summary`` (Parameters) returns the hddt-cgm-summary Bundle, type collection, entry 1..*, with the CGM summary Observation (LOINC 107931-8)."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    bundle = summary_bundle(env, summary(env, main_diga(env), token["access_token"], period_parameters(14)), "summary")
    expect(bundle.get("resourceType") == "Bundle" and bundle.get("type") == "collection", f"{bundle.get('resourceType')} {bundle.get('type')}")
    entries = bundle.get("entry", [])
    expect(entries, "no entry")
    codes = set().union(*(codes_of(e["resource"]) for e in entries if e["resource"].get("resourceType") == "Observation"))
    expect("107931-8" in codes, f"no CGM summary Observation: {codes}")


@test
def test_cgm_summary_supports_7_day_period_and_defaults(env):
    """§4 $hddt-cgm-summary: at least 7 days MUST be supported; without parameters the defaults (end now, >= 7 days back) apply."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    diga = main_diga(env)
    summary_bundle(env, summary(env, diga, token["access_token"], period_parameters(7)), "7 days")
    summary_bundle(env, summary(env, diga, token["access_token"], []), "defaults")


@test
def test_cgm_summary_related_adds_devices(env):
    """§4 $hddt-cgm-summary: ``related`` MUST be supported (true adds the Device resources, with the Device scope)."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split() or "patient/Device.rs" not in token["scope"].split():
        raise Skip("no CGM and Device scope")
    bundle = summary_bundle(env, summary(env, main_diga(env), token["access_token"], period_parameters(14, related=True)), "related")
    kinds = {e["resource"].get("resourceType") for e in bundle.get("entry", [])}
    expect("Device" in kinds, f"no Device with related=true: {kinds}")


@test
def test_cgm_summary_empty_period_is_operation_outcome(env):
    """§4 $hddt-cgm-summary: an empty result is an OperationOutcome (MSG_NO_MATCH), never an empty Bundle."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    end = now_utc() - datetime.timedelta(days=22)
    response = summary(env, main_diga(env), token["access_token"], period_parameters(7, end=end))
    body = env.fhir_json(response, "empty summary")
    if body.get("resourceType") == "Parameters":
        body = ([p.get("resource") for p in body.get("parameter", []) if p.get("resource")] or [{}])[0]
    expect(body.get("resourceType") == "OperationOutcome", f"got {body.get('resourceType')} ({response.status_code})")
    expect("MSG_NO_MATCH" in outcome_issue_text(body), f"issues: {outcome_issue_text(body)}")


@test
def test_cgm_summary_unknown_parameter_refused(env):
    """§4 $hddt-cgm-summary error codes: an unknown in-parameter gives an OperationOutcome with MSG_PARAM_UNKNOWN (code invalid)."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    response = summary(env, main_diga(env), token["access_token"], [{"name": "noSuchParameter", "valueBoolean": True}])
    expect(400 <= response.status_code < 500, describe(response))
    body = env.fhir_json(response, "unknown summary parameter")
    expect(body.get("resourceType") == "OperationOutcome", f"got {body.get('resourceType')}")
    expect("MSG_PARAM_UNKNOWN" in outcome_issue_text(body), f"issues: {outcome_issue_text(body)}")


@test
def test_code_search_returns_only_that_code(env):
    """§4 Search parameters MUST: ``code`` narrows the implicit scope filter (CGM code: only CGM Observations)."""
    found = bundle_observations(env, main_diga(env), env.main_token()["access_token"], "Observation?code=http://loinc.org|99504-3&_count=100")
    for observation in found:
        expect(codes_of(observation) == {"99504-3"}, f"Observation/{observation['id']} has {codes_of(observation)}")
    if env.ours:
        expect(found, "no CGM Observation")


@test
def test_value_quantity_search_filters_blood_glucose(env):
    """§4 Search parameters MUST: ``value-quantity`` (blood glucose): ``gt100|UCUM|mg/dL`` returns only readings above 100 mg/dL."""
    found = bundle_observations(env, main_diga(env), env.main_token()["access_token"],
                                "Observation?value-quantity=gt100|http://unitsofmeasure.org|mg/dL&_count=200")
    for observation in found:
        quantity = observation.get("valueQuantity", {})
        expect(codes_of(observation) & BG_CODES, f"Observation/{observation['id']} is not blood glucose")
        value = quantity.get("value", 0) * (18.016 if quantity.get("code") == "mmol/L" else 1)
        expect(value > 100, f"Observation/{observation['id']} value {quantity}")
    if env.ours:
        expect(found, "no reading above 100 mg/dL (the runner uploaded some)")


@test(ours="a device model that needs calibration")
def test_calibrating_device_observations_reference_devicemetric(env):
    """§4 Profiles: devices that require calibration MUST be referenced through a DeviceMetric (``source`` → Device, ``calibration.state``)."""
    diga = main_diga(env)
    token = env.main_token()["access_token"]
    chunks = cgm_chunks(env)
    references = {o.get("device", {}).get("reference", "") for o in chunks}
    expect(all(r.startswith("DeviceMetric/") for r in references), f"CGM (needs calibration) referenced as {references}")
    for reference in references:
        response = diga.fhir("GET", reference, token)
        expect(response.status_code == 200, f"{reference}: {describe(response)}")
        metric = env.fhir_json(response, reference)
        expect(metric.get("source", {}).get("reference", "").startswith("Device/"), f"{reference}: source {metric.get('source')}")
        calibrations = metric.get("calibration", [])
        expect(calibrations and all(c.get("state") for c in calibrations), f"{reference}: calibration {calibrations}")


@test(ours="the consent page of our server")
def test_consent_page_shows_requested_scopes_human_readable(env):
    """§1 Endpoints: the AS must show the requested scopes in human-readable form (one per MIV, only those requested)."""
    diga = env.digas["B"]
    form, _ = diga.par_form(env.scope_for(diga))
    request_uri = diga.post("pushed_authorization_request_endpoint", form).json()["request_uri"]
    page = browser_session(env).get(diga.authorization_url(request_uri), timeout=30)
    expect(page.status_code == 200, describe(page))
    text = re.sub(r"<[^>]+>", " ", page.text).lower()
    expect("continuous glucose" in text, "the CGM MIV is not named")
    expect("blood glucose" not in text, "an MIV that was not requested is shown")
    expect("conformance diga b" in text, "the DiGA is not named")


@test(ours="a second registered DiGA")
def test_revoke_refuses_token_of_another_client(env):
    """RFC 7009 §2.1: the AS verifies the token was issued to the revoking client; another DiGA cannot end this pairing."""
    diga, other = env.digas["A"], env.digas["B"]
    token = env.main_token()
    response = other.revoke(token["refresh_token"])
    expect(response.status_code in (200, 400, 401), describe(response))
    check = diga.fhir("GET", "Observation?_count=1", token["access_token"])
    expect(check.status_code == 200, f"another DiGA ended the pairing: {describe(check)}")
    again = diga.refresh(token["refresh_token"])
    env._main_token = dict(token, access_token=again["access_token"], refresh_token=again["refresh_token"])


@test
def test_cgm_summary_invalid_period_refused(env):
    """§4 $hddt-cgm-summary error codes: an invalid parameter (end before start) gives an OperationOutcome with MSG_PARAM_INVALID."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    end = now_utc()
    parameters = [
        {"name": "effectivePeriodStart", "valueDateTime": fhir_instant(end)},
        {"name": "effectivePeriodEnd", "valueDateTime": fhir_instant(end - datetime.timedelta(days=14))},
    ]
    response = summary(env, main_diga(env), token["access_token"], parameters)
    expect(400 <= response.status_code < 500, describe(response))
    body = env.fhir_json(response, "invalid summary period")
    expect("MSG_PARAM_INVALID" in outcome_issue_text(body), f"issues: {outcome_issue_text(body)}")


@test
def test_cgm_summary_bad_syntax_refused(env):
    """§4 $hddt-cgm-summary error codes: a body that is not a Parameters resource gives an OperationOutcome with MSG_BAD_SYNTAX."""
    token = env.main_token()
    if CGM_SCOPE not in token["scope"].split():
        raise Skip("no CGM scope")
    response = main_diga(env).fhir("POST", "Observation/$hddt-cgm-summary", token["access_token"],
                                   data='{"resourceType": "Parameters", "parameter": [', headers={"Content-Type": FHIR_JSON})
    expect(400 <= response.status_code < 500, describe(response))
    body = env.fhir_json(response, "bad summary syntax")
    expect("MSG_BAD_SYNTAX" in outcome_issue_text(body), f"issues: {outcome_issue_text(body)}")


@test(ours="a second registered DiGA and patient")
def test_cgm_summary_requires_cgm_miv(env):
    """§2 Aggregated data: the summary is linked to the CGM MIV; a token without it is refused (no summary)."""
    diga = env.digas["C"]
    token = diga.pair(scope=BG_SCOPE + " patient/Device.rs", patient="secondary", mivs=[BG_MIV])
    expect(CGM_SCOPE not in token["scope"].split(), "CGM granted")
    response = summary(env, diga, token["access_token"], period_parameters(14))
    # The status is not specified for the operation; 403 is not used by an HDDT RS (§4 RS errors).
    expect(response.status_code in (401, 404), describe(response))
    expect_outcome(env, response, response.status_code, "summary without the CGM MIV")


# ---------------------------------------------------------------------------
# The patient's side (our server, through the CLI)
# ---------------------------------------------------------------------------


@test(ours="the patient's CLI")
def test_patient_can_inspect_pairing_in_audit_trail(env):
    """§5 Privacy audit trail: pairings are logged and patients MUST be able to inspect the trail (``medvault audit list``)."""
    env.main_token()
    entries = env.ours.audit_list("primary")
    expect("hddt.pairing" in entries, "no hddt.pairing entry")
    expect(env.digas["A"].client_id in entries, "the DiGA is not named")


@test(ours="the patient's CLI")
def test_patient_unpairing_invalidates_tokens(env):
    """§3 Unpairing at the DDR frontend: immediate invalidation; the DiGA sees RS 401 invalid_token and /token 400 invalid_grant; the trail logs it."""
    diga = env.digas["B"]
    token = diga.pair()
    listed = env.ours.pairings("primary")
    expect(token["sub"] in listed, "the pairing is not listed for the patient")
    env.ours.revoke_pairing("primary", token["sub"])
    expect_invalid_token(env, diga.fhir("GET", "Observation?_count=1", token["access_token"]), "after the patient's revocation")
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": diga.client_id}
    oauth_error(diga.post("token_endpoint", form), 400, "invalid_grant")
    entries = env.ours.audit_list("primary")
    expect(re.search(r"hddt\.unpair", entries), "no unpairing entry in the patient's trail")


@test(ours="control of the DiGA-VZ")
def test_inactive_diga_gets_no_tokens(env):
    """§1: a DiGA not active in the DiGA-VZ MUST NOT get tokens (401 invalid_client; the refresh path re-checks the status); its data access ends."""
    diga = env.digas["C"]
    token = diga.pair()
    env.ours.set_diga_inactive("C")
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": diga.client_id}
    deadline = time.time() + 30
    while True:
        try:
            response = diga.post("token_endpoint", form)
        except requests.exceptions.SSLError:
            raise AssertionError("the inactive DiGA's certificate is refused at TLS: no 401 invalid_client")
        if response.status_code != 200 or time.time() > deadline:
            break
        form["refresh_token"] = response.json()["refresh_token"]
        time.sleep(1)
    oauth_error(response, 401, "invalid_client")
    fhir = diga.fhir("GET", "Observation?_count=1", token["access_token"])
    expect(fhir.status_code == 401, f"RS: {describe(fhir)}")
    form2, _ = diga.par_form(env.scope_for(diga))
    oauth_error(diga.post("pushed_authorization_request_endpoint", form2), 401, "invalid_client")


@test(ours="control of the DiGA-VZ")
def test_removed_diga_gets_401(env):
    """§1 / §3 Unpairing: after the DiGA is removed from the DiGA-VZ, /token gives 401 (invalid_client) and the RS refuses it with 401 and an OperationOutcome (403 is not used, §4 RS errors)."""
    diga = env.digas["D"]
    token = diga.pair()
    env.ours.remove_diga("D")
    form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": diga.client_id}
    deadline = time.time() + 30
    while True:
        try:
            response = diga.post("token_endpoint", form)
        except requests.exceptions.ConnectionError:
            raise AssertionError("the removed DiGA is refused at TLS on /token: no 401")
        if response.status_code != 200 or time.time() > deadline:
            break
        form["refresh_token"] = response.json()["refresh_token"]
        time.sleep(1)
    oauth_error(response, 401, "invalid_client")
    fhir = refused_at_tls_or(lambda: diga.fhir("GET", "Observation?_count=1", token["access_token"]), (401,))
    if fhir is not None:
        expect_outcome(env, fhir, 401, "RS after removal")


@test(ours="the operator's maintenance switch")
def test_maintenance_answers_503_with_retry_after(env):
    """§4 RS errors / §5 SLA: planned maintenance is a 503 ``transient`` with ``Retry-After``, distinct from a generic 5xx (medvault: ``admin maintenance on``)."""
    token = env.main_token()["access_token"]
    diga = main_diga(env)
    env.ours.admin("maintenance", "on", "--retry-after", "120")
    try:
        deadline = time.time() + 20
        while True:
            response = diga.fhir("GET", "Observation?_count=1", token)
            if response.status_code != 200 or time.time() > deadline:
                break
            time.sleep(0.5)
        body = expect_outcome(env, response, 503, "maintenance")
        expect(response.headers.get("Retry-After"), "no Retry-After")
        expect(any(issue.get("code") == "transient" for issue in body.get("issue", [])), "issue code is not transient")
    finally:
        env.ours.admin("maintenance", "off")
    deadline = time.time() + 20
    while diga.fhir("GET", "Observation?_count=1", token).status_code == 503 and time.time() < deadline:
        time.sleep(0.5)


@test(ours="the operator's retire command")
def test_retired_ddr_tells_diga_hddt_not_supported(env):
    """§3 Unpairing: a DDR retired from the HIIS-VZ SHOULD unpair and MUST return an error telling the DiGA that HDDT is no longer supported (⚠ format unspecified; medvault: 410 ``hddt_not_supported``)."""
    diga = main_diga(env)
    token = env.main_token()
    env.ours.admin("retire", "--yes")
    deadline = time.time() + 20
    while True:
        form, _ = diga.par_form(env.scope_for(diga))
        response = diga.post("pushed_authorization_request_endpoint", form)
        if response.status_code != 201 or time.time() > deadline:
            break
        time.sleep(0.5)
    expect(response.status_code >= 400, f"PAR after retirement: {describe(response)}")
    expect("not" in response.text.lower() and "support" in response.text.lower(), f"PAR does not say HDDT is unsupported: {describe(response)}")
    refresh = diga.post("token_endpoint", {"grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": diga.client_id})
    expect(refresh.status_code >= 400 and "support" in refresh.text.lower(), f"/token: {describe(refresh)}")
    fhir = diga.fhir("GET", "Observation?_count=1", token["access_token"])
    expect(fhir.status_code >= 400, f"FHIR still serves: {describe(fhir)}")
    env.fhir_json(fhir, "FHIR after retirement")


# ---------------------------------------------------------------------------
# After every test: FHIR validity and the privacy scans
# ---------------------------------------------------------------------------


@test(after=True)
def test_every_fhir_resource_validates_r4b(env):
    """§4 General: every FHIR resource the server returned is valid FHIR (checked with fhir.resources R4B; see fhir.py)."""
    expect(env.validator.checked > 0, "nothing validated")
    failures = env.validator.failures
    expect(not failures, f"{len(failures)} invalid: " + "; ".join(f"{w}: {e}" for w, e in failures[:3]))


@test(after=True)
def test_every_fhir_resource_passes_hddt_profile_rules(env):
    """§4 Profiles: every returned resource passes conformance/fhir-validate (FHIR R4 JSON schema, FHIRPath invariants, the HDDT guide's profile and ValueSet rules)."""
    validator = env.args.fhir_validator
    node = shutil.which("node")
    if not node or not os.path.isdir(os.path.join(validator, "node_modules")):
        raise Skip(f"no Node.js or no {validator}/node_modules (run scripts/setup-fhir-validator.sh)")
    directory = os.path.join(env.scratch, "fhir-resources")
    shutil.rmtree(directory, ignore_errors=True)
    count = env.validator.dump(directory)
    expect(count > 0, "no resource to validate")
    ig = os.path.join(os.path.dirname(validator), "hddt-ig")
    done = subprocess.run([node, os.path.join(validator, "validate.mjs"), "--ig", ig, directory],
                          capture_output=True, text=True, timeout=300)
    report = (done.stdout + done.stderr).strip().splitlines()
    expect(done.returncode == 0, f"{count} resources: " + " | ".join(report[-5:]))


@test(after=True, ours="an auditor account on our server")
def test_audit_trail_logs_pairing_events_and_denied_access(env):
    """§5 Privacy audit trail MUST log: pairing, unpairing, unsuccessful pairing and unpairing attempts, unauthorized access attempts to device data (seen as an auditor)."""
    entries = env.ours.audit_all()
    for event in ("hddt.pairing", "hddt.unpairing", "hddt.pairing_failed", "hddt.pairing_denied",
                  "hddt.unpairing_failed", "hddt.access_denied"):
        expect(re.search(rf"\s{re.escape(event)}\s", entries), f"no {event} entry")


@test(after=True)
def test_database_holds_no_kvnr(env):
    """HDDT "Identification and Authentication of the Patient": neither DDR nor DiGA shall learn the KVNR; the database has no KVNR-shaped value (with a valid check digit)."""
    if env.ours is None:
        raise Skip("the database of an external DDR is not reachable")
    expect(privacy.kvnr_hits(b"control X110411675.") == ["X110411675"], "the KVNR detector is broken")
    if env.ours.database:
        rows, hits = privacy.scan_postgres(env.ours.database)
    else:
        rows, hits = privacy.scan_sqlite(env.ours.sqlite_path)
    expect(rows > 0, "no rows scanned")
    expect(not hits, f"{len(hits)} KVNR-shaped values: {hits[:5]}")


@test(after=True)
def test_diga_visible_outputs_hold_no_patient_identity(env):
    """HDDT: a DDR MUST NOT transmit data that lets the DiGA identify the patient (no UID, email or name in any response or redirect the DiGA saw)."""
    if not env.identities:
        raise Skip("no test patient identities known (give --patient-identity)")
    expect(len(env.recorder.records) > 50, f"only {len(env.recorder.records)} responses recorded")
    hits = privacy.identity_hits(env.recorder.records, env.identities)
    expect(not hits, f"{len(hits)} hits: {hits[:3]}")

"""The command line and the runner of the HDDT conformance suite.

Without ``--server`` the runner starts its own ``medvault serve --dev`` (see
``ours``), sets it up through the CLI and drives the consent page itself.
With ``--server`` it tests any Device Data Recorder: give the DiGA's
``--client-id``, ``--client-cert``, ``--client-key``, ``--redirect-uri``, the
``--ca-file`` of the server's certificate and a ``--consent-hook``.

Output: one line per test (``ok NAME``, ``FAIL NAME: why``, ``skip NAME:
reason``), the table of untestable requirements, and last ``N passed, M
failed, K skipped``. The exit status is 0 only if no test failed.
"""

import argparse
import os
import sys
import time

import requests

from conformance.hddt import checks, consent
from conformance.hddt.diga import Diga, Recorder, miv_of
from conformance.hddt.fhir import Validator
from conformance.hddt.skips import SKIPS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Env:
    """What every test gets: the server's metadata, the DiGAs, the consent step."""

    def __init__(self, args):
        self.args = args
        self.recorder = Recorder()
        self.validator = Validator()
        self.ours = None
        self.ca_file = args.ca_file
        self.metadata = None
        self.fhir_base = args.fhir_base
        self.digas = {}
        self.consent = None
        self.identities = {}
        self._main_token = None
        self.scratch = None

    # --- set-up -----------------------------------------------------------

    def connect(self, server_url):
        """Reads the authorization server's metadata (RFC 8414)."""
        url = server_url.rstrip("/") + "/.well-known/oauth-authorization-server"
        response = requests.get(url, verify=self.ca_file, timeout=30)
        response.raise_for_status()
        self.metadata_response = response
        self.metadata = response.json()
        if not self.fhir_base:
            self.fhir_base = server_url.rstrip("/") + "/fhir"

    def scope_for(self, diga):
        """The scope a DiGA asks for: ``--scope`` or the supported scopes it may use."""
        if self.args.scope and diga.name == "A":
            return " ".join(self.args.scope)
        supported = self.metadata.get("scopes_supported", [])
        allowed = getattr(diga, "mivs", None)
        if allowed is None:
            return " ".join(supported)
        return " ".join(
            scope for scope in supported if miv_of(scope) is None or miv_of(scope) in allowed
        )

    def forget_pairing(self, diga, patient):
        """A new consent of ``patient`` for ``diga``: the cached main pairing may have ended."""
        if (diga, patient) == ("A", "primary"):
            self._main_token = None

    def main_token(self):
        """The main pairing (DiGA A, primary patient, every scope), made once."""
        if self._main_token is None:
            self._main_token = self.digas["A"].pair()
        return self._main_token

    # --- FHIR helpers -------------------------------------------------------

    def fhir_json(self, response, where):
        """The JSON body of a FHIR response, validated with fhir.resources (R4B)."""
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"{where}: body is not JSON: {response.text[:200]}")
        # A body that is not FHIR at all (no resourceType) is the caller's
        # failure to report, not one for the FHIR validators.
        if isinstance(body, dict) and "resourceType" in body:
            self.validator.validate(body, where)
        return body

    def search_all(self, diga, token, query, limit=100):
        """Every entry of a search, following ``next`` links (at most ``limit`` pages)."""
        response = diga.fhir("GET", query, token)
        entries, pages = [], 0
        while True:
            if response.status_code != 200:
                raise AssertionError(f"{query} page {pages}: {response.status_code} {response.text[:200]}")
            bundle = self.fhir_json(response, f"{query} page {pages}")
            entries += bundle.get("entry", [])
            pages += 1
            nexts = [link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"]
            if not nexts or pages >= limit:
                return entries
            response = diga.fhir("GET", nexts[0], token)


def parse_args(argv):
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m conformance.hddt",
        description="Black-box HDDT conformance suite for a Device Data Recorder.",
    )
    parser.add_argument("--server", help="OAuth base URL of an existing DDR (its metadata is at "
                        "SERVER/.well-known/oauth-authorization-server); without it the runner "
                        "starts its own medvault serve --dev")
    parser.add_argument("--fhir-base", help="FHIR base URL (default: SERVER/fhir)")
    parser.add_argument("--client-id", help="the DiGA's client_id (urn:diga:bfarm:NNNNN)")
    parser.add_argument("--client-cert", help="the DiGA's client certificate (PEM)")
    parser.add_argument("--client-key", help="the DiGA's private key (PEM)")
    parser.add_argument("--redirect-uri", help="the DiGA's registered redirect_uri")
    parser.add_argument("--scope", action="append",
                        help="a scope to ask for (repeat; default: every scope in scopes_supported)")
    parser.add_argument("--ca-file", help="CA certificate(s) of the server's TLS certificate (PEM)")
    parser.add_argument("--consent-hook", help="command that receives the authorization URL and "
                        "prints the redirect URL it ended on (see README.md)")
    parser.add_argument("--patient-identity", action="append", default=[],
                        help="external DDR: a UID, email or name of the consenting test patient "
                        "that the DiGA must never see (repeat)")
    parser.add_argument("--database", help="ours only: sqlite (default) or a postgres:// URL")
    parser.add_argument("--medvault-bin", default=os.path.join(ROOT, "target", "debug", "medvault"),
                        help="the medvault binary (default: target/debug/medvault)")
    parser.add_argument("--fhir-validator", default=os.path.join(ROOT, "conformance", "fhir-validate"),
                        help="conformance/fhir-validate (with node_modules from scripts/setup-fhir-validator.sh) "
                        "to check every returned resource against the HDDT profiles; skipped without it")
    parser.add_argument("--only", action="append", help="run only tests whose name contains this")
    parser.add_argument("--list-skips", action="store_true",
                        help="print the requirements that cannot be tested from outside and exit")
    parser.add_argument("--keep", action="store_true", help="ours: keep the data directory")
    args = parser.parse_args(argv)
    if args.server:
        missing = [name for name in ("client_id", "client_cert", "client_key", "redirect_uri",
                                     "consent_hook") if not getattr(args, name)]
        if missing:
            parser.error("--server needs " + ", ".join("--" + m.replace("_", "-") for m in missing))
    elif args.medvault_bin and not os.path.isabs(args.medvault_bin):
        args.medvault_bin = os.path.join(ROOT, args.medvault_bin)
    return args


def print_skips(out):
    """The table of untestable requirements."""
    print("requirements not testable from outside:", file=out)
    for requirement, section, reason in SKIPS:
        print(f"  - {requirement} [{section}]: {reason}", file=out)


def setup_ours(env, args):
    """Starts and sets up our server; fills ``env``."""
    from conformance.hddt.ours import OurServer

    database = None if args.database in (None, "", "sqlite") else args.database
    server = OurServer(args.medvault_bin, database)
    env.ours = server
    server.start()
    server.setup()
    env.ca_file = server.ca_file
    env.scratch = server.work
    env.connect(server.issuer_url)
    for name, entry in server.digas.items():
        diga = Diga(name, entry["client_id"], entry["cert"], entry["key"], entry["redirect_uri"], env)
        diga.mivs = entry["mivs"]
        env.digas[name] = diga
    if args.consent_hook:
        # The hook contract of medvault_hook.py: where the binary, the CA and
        # the patients' CLI profiles are.
        os.environ.update(
            MEDVAULT_BIN=server.binary,
            MEDVAULT_HOOK_CA=server.ca_file,
            MEDVAULT_HOOK_PROFILE=server.patients["primary"]["profile"],
            MEDVAULT_HOOK_PROFILE_PRIMARY=server.patients["primary"]["profile"],
            MEDVAULT_HOOK_PROFILE_SECONDARY=server.patients["secondary"]["profile"],
        )
        env.consent = consent.HookConsent(args.consent_hook)
    else:
        env.consent = consent.MedvaultConsent(server.ca_file, server.ticket)
    for label, patient in server.patients.items():
        env.identities[f"{label} patient UID"] = patient["uid"]
        env.identities[f"{label} patient email"] = patient["email"]
    # The registry reload reaches the mTLS allow-list within seconds.
    deadline = time.time() + 30
    while True:
        try:
            form, _ = env.digas["A"].par_form(env.scope_for(env.digas["A"]))
            response = env.digas["A"].post("pushed_authorization_request_endpoint", form)
            if response.status_code == 201:
                break
            last = f"{response.status_code} {response.text[:200]}"
        except requests.exceptions.RequestException as error:
            last = str(error)
        if time.time() > deadline:
            raise RuntimeError(f"the DiGA registration did not take effect within 30 s: {last}")
        time.sleep(0.5)


def setup_external(env, args):
    """Fills ``env`` for a DDR given by ``--server``."""
    import tempfile

    env.connect(args.server)
    env.digas["A"] = Diga("A", args.client_id, args.client_cert, args.client_key,
                          args.redirect_uri, env)
    env.consent = consent.HookConsent(args.consent_hook)
    for number, value in enumerate(args.patient_identity, 1):
        env.identities[f"patient identity {number}"] = value
    env.scratch = tempfile.mkdtemp(prefix="hddt-conformance-")


def main(argv=None):
    """Runs the suite; the exit status (0 only if no test failed)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = sys.stdout
    if args.list_skips:
        print_skips(out)
        return 0
    started = time.time()
    env = Env(args)
    passed = failed = skipped = 0
    try:
        try:
            if args.server:
                setup_external(env, args)
            else:
                setup_ours(env, args)
        except Exception as error:
            failed = 1
            print(f"FAIL setup: {type(error).__name__}: {error}", file=out)
            if env.ours:
                print(f"  server log: {env.ours.log_path}", file=out)
            print("0 passed, 1 failed, 0 skipped", file=out)
            return 1
        target = "our medvault serve --dev" if env.ours else args.server
        backend = f" ({'PostgreSQL' if env.ours and env.ours.database else 'SQLite'})" if env.ours else ""
        print(f"HDDT conformance against {target}{backend}", file=out)
        for test in checks.TESTS + checks.AFTER:
            if args.only and not any(part in test.name for part in args.only):
                continue
            outcome, why = checks.run_one(test, env)
            if outcome == "ok":
                passed += 1
                print(f"ok {test.name}", file=out)
            elif outcome == "skip":
                skipped += 1
                print(f"skip {test.name}: {why}", file=out)
            else:
                failed += 1
                print(f"FAIL {test.name}: {why}", file=out)
            out.flush()
    finally:
        if env.ours:
            env.ours.stop()
            if not args.keep and failed == 0:
                env.ours.remove()
            else:
                print(f"kept: {env.ours.work}", file=out)
    print_skips(out)
    print(f"wall time {time.time() - started:.1f} s; {env.validator.checked} FHIR resources validated", file=out)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", file=out)
    return 0 if failed == 0 else 1

"""The DiGA: an OAuth 2.0 client over mTLS and a FHIR client.

PAR is a plain form POST (Authlib has no PAR client); PKCE (S256), the token
request, refresh and revocation go through Authlib's ``OAuth2Session``. The
client authenticates with its certificate only (``tls_client_auth``), so
Authlib's ``none`` method is used, which sends ``client_id`` in the body.
Every response the DiGA receives is recorded for the privacy scan.
"""

import secrets
import urllib.parse

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7636 import create_s256_code_challenge

FHIR_JSON = "application/fhir+json"
TIMEOUT = 30


def mount_retries(session):
    """Retries idempotent requests once when a pooled connection was closed by the
    server before answering (a server may close a connection whose request body it
    did not read; RFC 9112 §9.3.1 lets clients retry idempotent requests)."""
    retry = Retry(total=2, connect=2, read=1, status=0, other=0,
                  allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}), raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class Recorder:
    """Keeps the text of every response a DiGA received (for the privacy scan)."""

    def __init__(self):
        self.records = []

    def hook(self, response, *args, **kwargs):
        """A ``requests`` response hook."""
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        try:
            body = response.content.decode("utf-8", "replace")
        except Exception:  # a streamed or broken body: nothing to scan
            body = ""
        where = f"{response.request.method} {response.url} -> {response.status_code}"
        self.records.append((where, f"{headers}\n\n{body}"))
        return response

    def note(self, where, text):
        """Records something the DiGA saw outside a response (a redirect URL)."""
        self.records.append((where, text))


def miv_of(scope):
    """The MIV ValueSet id of an Observation scope, None for other scopes."""
    marker = "code:in="
    if marker not in scope:
        return None
    return scope.split(marker, 1)[1].rstrip("/").rsplit("/", 1)[-1]


def query_value(url, name):
    """A query parameter of ``url``, or None."""
    values = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get(name)
    return values[0] if values else None


class Diga:
    """One DiGA: client_id, certificate and key, redirect_uri, the server's metadata."""

    def __init__(self, name, client_id, cert, key, redirect_uri, env):
        self.name = name
        self.client_id = client_id
        self.cert = cert
        self.key = key
        self.redirect_uri = redirect_uri
        self.env = env
        self.http = self.session(with_cert=True)

    def session(self, with_cert=True, cert=None):
        """A ``requests`` session with this DiGA's certificate (or ``cert``, or none)."""
        session = requests.Session()
        # requests would replace session.verify with REQUESTS_CA_BUNDLE.
        session.trust_env = False
        session.verify = self.env.ca_file
        if cert is not None:
            session.cert = cert
        elif with_cert:
            session.cert = (self.cert, self.key)
        session.hooks["response"].append(self.env.recorder.hook)
        return mount_retries(session)

    def oauth(self, scope=None):
        """An Authlib OAuth2Session for this DiGA (PKCE S256, client_id in the body)."""
        session = OAuth2Session(
            client_id=self.client_id,
            redirect_uri=self.redirect_uri,
            scope=scope,
            token_endpoint_auth_method="none",
            code_challenge_method="S256",
        )
        session.trust_env = False
        session.verify = self.env.ca_file
        session.cert = (self.cert, self.key)
        session.hooks["response"].append(self.env.recorder.hook)
        return mount_retries(session)

    # --- the authorization server ---------------------------------------

    def par_form(self, scope, verifier=None, **overrides):
        """The pushed authorization request's form and the PKCE verifier.

        ``overrides`` replace fields; a value of None removes the field.
        """
        verifier = verifier or generate_token(64)
        form = {
            "client_id": self.client_id,
            "response_type": "code",
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "state": "st-" + secrets.token_urlsafe(12),
        }
        for name, value in overrides.items():
            if value is None:
                form.pop(name, None)
            else:
                form[name] = value
        return form, verifier

    def post(self, endpoint, form, session=None):
        """POSTs ``form`` to an endpoint named in the metadata (``token_endpoint`` …)."""
        session = session or self.http
        return session.post(self.env.metadata[endpoint], data=form, timeout=TIMEOUT)

    def authorization_url(self, request_uri):
        """The URL the patient's browser opens for ``request_uri``."""
        query = urllib.parse.urlencode(
            {"client_id": self.client_id, "request_uri": request_uri}
        )
        return f"{self.env.metadata['authorization_endpoint']}?{query}"

    def authorize(self, scope, patient="primary", mivs=None, decision="approve"):
        """PAR, the patient's consent (hook), back at the redirect_uri.

        Returns ``(redirect_url, verifier, state)``. ``mivs`` are the ValueSet
        ids the patient approves (default: every MIV of ``scope``).
        """
        form, verifier = self.par_form(scope)
        pushed = self.post("pushed_authorization_request_endpoint", form)
        if pushed.status_code not in (200, 201):
            raise AssertionError(f"PAR answered {pushed.status_code}: {pushed.text[:300]}")
        request_uri = pushed.json()["request_uri"]
        if mivs is None:
            mivs = [miv for miv in map(miv_of, scope.split()) if miv]
        redirect = self.env.consent(
            self.authorization_url(request_uri), decision, mivs, patient
        )
        self.env.recorder.note(f"redirect to {self.name}", redirect)
        # A new consent for the same DiGA and patient may end the previous
        # grant (medvault does so at once): pair again for the next test.
        self.env.forget_pairing(self.name, patient)
        return redirect, verifier, form["state"]

    def pair(self, scope=None, patient="primary", mivs=None):
        """A whole pairing with Authlib: the token response (a dict).

        The code is redeemed with ``OAuth2Session.fetch_token``, which also
        checks that the redirect carries the ``state`` sent in the PAR.
        """
        scope = scope or self.env.scope_for(self)
        redirect, verifier, state = self.authorize(scope, patient, mivs)
        oauth = self.oauth(scope)
        token = oauth.fetch_token(
            self.env.metadata["token_endpoint"],
            authorization_response=redirect,
            state=state,
            code_verifier=verifier,
            grant_type="authorization_code",
        )
        return dict(token)

    def refresh(self, refresh_token):
        """Refreshes with Authlib; the new token response (raises on an error)."""
        oauth = self.oauth()
        return dict(
            oauth.refresh_token(
                self.env.metadata["token_endpoint"], refresh_token=refresh_token
            )
        )

    def revoke(self, token, hint="refresh_token"):
        """Revokes with Authlib (RFC 7009); the response."""
        oauth = self.oauth()
        return oauth.revoke_token(
            self.env.metadata["revocation_endpoint"], token=token, token_type_hint=hint
        )

    # --- the resource server --------------------------------------------

    def fhir(self, method, path, token, session=None, headers=None, **kwargs):
        """A FHIR request: ``path`` relative to the FHIR base (or absolute)."""
        session = session or self.http
        url = path if path.startswith("https://") else f"{self.env.fhir_base}/{path.lstrip('/')}"
        sent = {"Accept": FHIR_JSON}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        return session.request(method, url, headers=sent, timeout=TIMEOUT, **kwargs)

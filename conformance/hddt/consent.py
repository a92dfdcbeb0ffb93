"""The patient's consent step: from the authorization URL to the redirect URL.

Two implementations with one contract: given the authorization URL, the
decision (``approve`` or ``deny``), the MIVs (ValueSet ids) the patient
approves and which test patient (``primary`` or ``secondary``) consents,
return the URL the browser was finally sent to (the DiGA's redirect_uri with
``code``/``state`` or ``error``).

* ``HookConsent`` runs a command (``--consent-hook``) for any Device Data
  Recorder: the URL is its last argument and ``HDDT_AUTHORIZATION_URL``;
  ``HDDT_CONSENT_DECISION``, ``HDDT_CONSENT_MIVS`` (space-separated) and
  ``HDDT_PATIENT`` say what to do; it prints the redirect URL as the last
  line of its standard output and exits 0.
* ``MedvaultConsent`` drives medvault's consent page over plain HTTP, as a
  browser would: ``GET /authorize``, ``POST /authorize/login`` with a one-time
  ticket the patient made with ``medvault pairing ticket``, ``POST
  /authorize/decision``; the CSRF token comes from the page's hidden fields.
"""

import html
import os
import re
import subprocess
import urllib.parse

import requests


class ConsentError(Exception):
    """The consent step did not end at a redirect."""


class HookConsent:
    """Runs ``command`` (a shell command line) for each consent."""

    def __init__(self, command):
        self.command = command

    def __call__(self, authorization_url, decision, mivs, patient):
        env = dict(os.environ)
        env.update(
            HDDT_AUTHORIZATION_URL=authorization_url,
            HDDT_CONSENT_DECISION=decision,
            HDDT_CONSENT_MIVS=" ".join(mivs),
            HDDT_PATIENT=patient,
        )
        done = subprocess.run(
            f'{self.command} "$HDDT_AUTHORIZATION_URL"',
            shell=True,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
        if done.returncode != 0 or not lines:
            raise ConsentError(
                f"consent hook exited {done.returncode}: {done.stderr.strip()[:300]}"
            )
        return lines[-1]


def hidden_field(page, name):
    """The value of the hidden form field ``name`` of ``page``."""
    match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page)
    if not match:
        raise ConsentError(f"no hidden field {name} on the consent page")
    return html.unescape(match.group(1))


class MedvaultConsent:
    """medvault's consent page, driven over HTTP; ``ticket(patient)`` makes a login ticket."""

    def __init__(self, ca_file, ticket, days="30"):
        self.ca_file = ca_file
        self.ticket = ticket
        self.days = days

    def __call__(self, authorization_url, decision, mivs, patient):
        browser = requests.Session()
        browser.trust_env = False
        browser.verify = self.ca_file
        parsed = urllib.parse.urlparse(authorization_url)
        origin = f"{parsed.scheme}://{parsed.netloc}"
        page = browser.get(authorization_url, allow_redirects=False, timeout=30)
        if page.status_code != 200:
            raise ConsentError(f"GET authorize answered {page.status_code}: {page.text[:200]}")
        request_uri = hidden_field(page.text, "request_uri")
        csrf = hidden_field(page.text, "csrf")
        logged_in = browser.post(
            f"{origin}/authorize/login",
            data={
                "request_uri": request_uri,
                "csrf": csrf,
                "ticket": self.ticket(patient).lower(),
            },
            allow_redirects=False,
            timeout=30,
        )
        if logged_in.status_code != 200:
            raise ConsentError(f"ticket login answered {logged_in.status_code}")
        form = [("request_uri", request_uri), ("csrf", csrf)]
        form += [("miv", miv) for miv in mivs]
        form += [("days", self.days), ("decision", decision)]
        decided = browser.post(
            f"{origin}/authorize/decision", data=form, allow_redirects=False, timeout=30
        )
        location = decided.headers.get("Location")
        if decided.status_code not in (302, 303) or not location:
            raise ConsentError(
                f"decision answered {decided.status_code}: {decided.text[:200]}"
            )
        return location

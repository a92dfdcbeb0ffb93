"""A consent hook for medvault, and the model of one for another DDR.

``--consent-hook "python -m conformance.hddt.medvault_hook"`` when the suite
runs with ``--server`` against a medvault the runner did not start. The hook
contract (README.md): the authorization URL is the last argument (and
``HDDT_AUTHORIZATION_URL``); ``HDDT_CONSENT_DECISION`` is ``approve`` or
``deny``; ``HDDT_CONSENT_MIVS`` the space-separated ValueSet ids to approve;
``HDDT_PATIENT`` the test patient (``primary`` or ``secondary``). The hook
prints the URL the browser was sent to and exits 0.

This one needs ``MEDVAULT_BIN`` (the binary), ``MEDVAULT_HOOK_CA`` (the
server's CA, PEM) and ``MEDVAULT_HOOK_PROFILE`` (the patient's logged-in CLI
profile directory; ``MEDVAULT_HOOK_PROFILE_SECONDARY`` for the second
patient). It makes a one-time ticket with ``medvault pairing ticket`` and
drives the consent page over HTTP.
"""

import os
import re
import subprocess
import sys

from conformance.hddt.consent import MedvaultConsent


def ticket(patient):
    """A login ticket of ``patient`` from the CLI."""
    profile = os.environ.get(f"MEDVAULT_HOOK_PROFILE_{patient.upper()}") or os.environ["MEDVAULT_HOOK_PROFILE"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVAULT_")}
    out = subprocess.run(
        [os.environ.get("MEDVAULT_BIN", "medvault"), "pairing", "ticket", "--profile", profile],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    return re.search(r"login ticket:\s*(\S+)", out).group(1)


def main():
    url = sys.argv[-1] if len(sys.argv) > 1 else os.environ["HDDT_AUTHORIZATION_URL"]
    consent = MedvaultConsent(os.environ["MEDVAULT_HOOK_CA"], ticket)
    mivs = os.environ.get("HDDT_CONSENT_MIVS", "").split()
    print(consent(url, os.environ.get("HDDT_CONSENT_DECISION", "approve"), mivs,
                  os.environ.get("HDDT_PATIENT", "primary")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

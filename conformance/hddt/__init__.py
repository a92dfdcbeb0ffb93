"""Black-box HDDT conformance suite for a Device Data Recorder (§ 374a SGB V).

The suite acts as a DiGA from outside, with third-party libraries only
(requests with a client certificate, Authlib for PKCE, token, refresh and
revocation, jwcrypto for the JWT checks, fhir.resources to validate every
FHIR resource), and as a patient through the consent page or a hook. Run it
with ``python -m conformance.hddt --help`` from the repository root; see
``conformance/README.md``.

Modules:

* ``run``: the command line, the runner and the report;
* ``ours``: starting and setting up a ``medvault serve --dev`` process through
  the CLI (patients, devices, readings, DiGAs in the DiGA-VZ);
* ``diga``: the DiGA client (PAR, consent, token, refresh, revocation, FHIR);
* ``consent``: the patient's consent step (built-in driver or a hook command);
* ``checks``: the tests, one per normative requirement;
* ``skips``: the requirements that cannot be tested from outside;
* ``fhir``: FHIR validation with ``fhir.resources.R4B``;
* ``privacy``: the KVNR scan of the database and the identity scan of
  everything the DiGA saw.
"""

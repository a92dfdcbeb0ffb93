"""Normative requirements that a black-box suite cannot test, with the reason.

Each row is ``(requirement, section of the digest, reason)``. The runner
prints them with ``--list-skips`` and at the end of a run; README.md has the
same table.
"""

SKIPS = [
    (
        "DDR publishes a CAA DNS record for its domains",
        "§6 DDR server certificates",
        "a DNS property of the production domain, not of the server process; "
        "the suite talks to a test address (OPERATIONS.md lists it as an operator duty)",
    ),
    (
        "DDR continuously monitors CT logs for its domains",
        "§6 DDR server certificates",
        "an operator process outside the server",
    ),
    (
        "DDR server certificate is publicly trusted (CA/Browser Forum), not self-signed, "
        "with SCTs and a CRL",
        "§6 DDR server certificates",
        "a test DDR runs with a development CA; checkable only against the production "
        "host name (medvault refuses a self-signed certificate outside --dev)",
    ),
    (
        "TLS versions, cipher suites, curves and keys follow BSI TR-02102-2",
        "§1 TLS, §6",
        "needs a TLS scanner (e.g. testssl.sh) against the production listener; "
        "the Python ssl module cannot enumerate what the server refuses",
    ),
    (
        "SLA: 99.5 % monthly availability, 24/7, >= 50 parallel requests/s",
        "§5 SLA",
        "an operational measure over a month, not a property of one run",
    ),
    (
        "Planned maintenance announced 5 business days ahead",
        "§5 SLA",
        "an organisational duty; medvault's 503 maintenance answer is tested only "
        "against our own server",
    ),
    (
        "429 with Retry-After when rate-limited",
        "§4 RS error catalogue",
        "needs more requests per second than the DDR's limit (medvault: 500/s per DiGA), "
        "which a single Python client cannot reliably produce",
    ),
    (
        "Trust caches: DiGA-VZ <= 4 h, HIIS-VZ <= 4 h, ZTS <= 24 h, CRLs <= 2 h; "
        "fail closed when a source is unreachable",
        "§6 Trust caching",
        "needs hours of wall time or control over the registries the DDR reads",
    ),
    (
        "Changes to scopes, endpoints or clients reach the metadata without undue delay",
        "§1 Metadata",
        "needs control over the DDR's configuration and registries",
    ),
    (
        "Refresh token lifetime is 30 days (when the refresh token is opaque)",
        "§1 Tokens",
        "an opaque refresh token has no readable expiry; a JWT refresh token is checked",
    ),
    (
        "Access tokens expire (exp) and are refused after it",
        "§4 RS error catalogue ('The access token expired')",
        "needs to wait the token lifetime (medvault: 600 s); the exp claim is checked",
    ),
    (
        "Operational request log (fields, 30 days, integrity, delivery within 3 business days)",
        "§5 Operational request log",
        "the log is not visible to a DiGA; medvault's is tested by its Rust suite "
        "(admin request-log verify)",
    ),
    (
        "Privacy audit trail kept >= 30 days, data-protection commissioners get access",
        "§5 Privacy audit trail",
        "retention needs 30 days; commissioners' access is organisational "
        "(the patient's view of pairing events is tested against our server)",
    ),
    (
        "Consent validity <= prescription period (<= 1 year)",
        "§5 Consent",
        "the prescription period is not known to a black-box DiGA; the one-year cap of "
        "the consent page is medvault-specific",
    ),
    (
        "Duties of the DiGA (verify the DDR's FQDN against the HIIS-VZ, revoke at "
        "prescription end, check daily, registry calls from the backend only)",
        "§3 Unpairing, §6",
        "duties of the client, not of the Device Data Recorder under test",
    ),
    (
        "DiGA retired or removed from the DiGA-VZ: the DDR revokes all its pairings",
        "§3 Unpairing",
        "medvault waits diga_unpair_grace_secs (24 h) before ending pairings; "
        "the immediate 401 of an inactive DiGA is tested",
    ),
    (
        "Full StructureDefinition validation of the HL7 CGM IG profiles (summary entries)",
        "§4 Aggregated data",
        "needs the HL7 FHIR Validator (Java) and the hl7.fhir.uv.cgm package; the suite "
        "checks FHIR R4B structure (fhir.resources) and the HDDT guide's rules "
        "(conformance/fhir-validate), not every constraint of the HL7 profiles",
    ),
]

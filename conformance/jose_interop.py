"""Black-box JOSE interoperability of the Patient Credential (spec 003).

Checks medvault from outside with a JOSE library that is not medvault's own
(jwcrypto, over the `cryptography` package):

* a credential request made by medvault's SDK verifies under the key in its
  `jwk`, and its `did:key` `sub` names that same key;
* a request made here (did:jwk subject, signed by jwcrypto) is accepted by
  the server, and the credential it returns verifies against the issuer keys
  the server publishes (JWKS and the institution's did:web document), with
  the claims spec 003 asks for;
* requests with `alg` none or HS256 are refused;
* a presentation signed here over the server's nonce lifts the session to
  IAL2, and a second use of the nonce is refused;
* the signed status list verifies and decodes (W3C Bitstring Status List).

Input: one JSON object on standard input with `base_url`, `ca_file`,
`token` (a patient session), `code` (a fresh one-time code for that
patient), `sdk_request` (a request JWS made by the SDK). Output: one line per
check, `ok NAME` or `FAIL NAME: why`, then `N passed, M failed`; the exit
status is 0 only if every check passed.
"""

import base64
import gzip
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid

from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwk, jws, jwt

RESULTS = []


def check(name, condition, why=""):
    RESULTS.append((name, bool(condition), why))


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc_decode(text):
    number = 0
    for char in text:
        number = number * 58 + B58.index(char)
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + raw


def did_key_point(did):
    """The P-256 public key a did:key names (multicodec 0x1200, compressed)."""
    assert did.startswith("did:key:z"), did
    data = base58btc_decode(did[len("did:key:z"):])
    assert data[:2] == b"\x80\x24", "not a P-256 did:key"
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data[2:])


def same_key(public, key):
    numbers = public.public_numbers()
    exported = key.export_public(as_dict=True)
    return (
        exported["crv"] == "P-256"
        and int.from_bytes(unb64url(exported["x"]), "big") == numbers.x
        and int.from_bytes(unb64url(exported["y"]), "big") == numbers.y
    )


class Server:
    def __init__(self, base_url, ca_file):
        self.base = base_url.rstrip("/")
        self.context = ssl.create_default_context(cafile=ca_file)

    def call(self, method, path, body=None, token=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=20) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def json(self, method, path, body=None, token=None):
        status, headers, raw = self.call(method, path, body, token)
        return status, json.loads(raw) if raw else None


def sign(key, claims, header=None):
    token = jws.JWS(json.dumps(claims).encode())
    protected = header or {"alg": "ES256", "typ": "JWT"}
    token.add_signature(key, alg="ES256", protected=json.dumps(protected))
    return token.serialize(compact=True)


def main():
    given = json.load(sys.stdin)
    server = Server(given["base_url"], given["ca_file"])
    token = given["token"]

    # 1. The SDK's request, verified by jwcrypto.
    sdk_request = given["sdk_request"]
    parsed = jws.JWS()
    parsed.deserialize(sdk_request)
    claims = json.loads(parsed.objects["payload"])
    request_key = jwk.JWK(**claims["jwk"])
    try:
        parsed.verify(request_key, alg="ES256")
        check("sdk request verifies with its jwk", True)
    except Exception as error:  # noqa: BLE001 - any failure is a failed check
        check("sdk request verifies with its jwk", False, repr(error))
    check(
        "sdk request sub (did:key) names its jwk",
        same_key(did_key_point(claims["sub"]), request_key),
    )
    check(
        "sdk request has the fields of spec 003",
        set(claims) >= {"grant_type", "sub", "client_id", "key_protection", "code", "iat", "exp", "jti", "jwk"}
        and claims["grant_type"] == "authorization_code",
        json.dumps(sorted(claims)),
    )

    # 2. A request made here, with a did:jwk subject.
    device = jwk.JWK.generate(kty="EC", crv="P-256")
    public = device.export_public(as_dict=True)
    holder = "did:jwk:" + b64url(json.dumps(public, separators=(",", ":")).encode())
    now = int(time.time())
    request_claims = {
        "grant_type": "authorization_code",
        "sub": holder,
        "client_id": "medvault-cli",
        "key_protection": "software",
        "code": given["code"],
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        "jwk": public,
    }
    for alg, signature in (("none", b""), ("HS256", b"\x07" * 32)):
        forged = ".".join(
            [
                b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()),
                b64url(json.dumps(request_claims).encode()),
                b64url(signature),
            ]
        )
        status, body = server.json("POST", "/api/v1/patient-credentials", {"request": forged}, token)
        check(f"a request with alg {alg} is refused", status == 400, f"{status} {body}")
    status, issued = server.json(
        "POST", "/api/v1/patient-credentials", {"request": sign(device, request_claims)}, token
    )
    check("a request signed by jwcrypto is accepted", status == 201, f"{status} {issued}")
    if status != 201:
        return
    credential = issued["credential"]

    # 3. The credential, verified with the published keys.
    status, jwks = server.json("GET", "/.well-known/jwks.json")
    keyset = jwk.JWKSet.from_json(json.dumps(jwks))
    header = json.loads(unb64url(credential.split(".")[0]))
    payload = json.loads(unb64url(credential.split(".")[1]))
    try:
        verified = jwt.JWT(
            jwt=credential,
            key=keyset,
            algs=["ES256"],
            check_claims={"exp": None, "iss": payload["iss"], "sub": holder, "jti": request_claims["jti"]},
        )
        check("the credential verifies with the JWKS (kid lookup)", True)
        claims = json.loads(verified.claims)
    except Exception as error:  # noqa: BLE001
        check("the credential verifies with the JWKS (kid lookup)", False, repr(error))
        claims = payload
    check(
        "the credential header is ES256, typ vc+jwt, with a kid",
        header.get("alg") == "ES256" and header.get("typ") == "vc+jwt" and header.get("kid"),
        json.dumps(header),
    )
    check(
        "the credential has the claims of spec 003",
        set(claims) >= {"iss", "sub", "aud", "iat", "exp", "jti", "vc"}
        and claims["vc"]["type"] == ["VerifiableCredential", "PatientCredential", "IAL2"]
        and set(claims["vc"]["credentialSubject"]["physician"]) >= {"type", "name", "address"}
        and claims["iss"].startswith("did:web:"),
        json.dumps(claims),
    )
    institution = claims["iss"].rsplit(":", 1)[1]
    status, document = server.json("GET", f"/institutions/{institution}/did.json")
    methods = {method["id"]: method for method in document["verificationMethod"]}
    method = methods.get(f"{claims['iss']}#{header['kid']}")
    check(
        "the did:web document publishes the key for assertions",
        document["id"] == claims["iss"] and method and method["id"] in document["assertionMethod"],
        json.dumps(document),
    )
    if method:
        checked = jws.JWS()
        checked.deserialize(credential)
        try:
            checked.verify(jwk.JWK(**method["publicKeyJwk"]), alg="ES256")
            check("the credential verifies with the did:web key", True)
        except Exception as error:  # noqa: BLE001
            check("the credential verifies with the did:web key", False, repr(error))

    # 4. The status list.
    entry = next(e for e in claims["vc"]["credentialStatus"] if e["statusPurpose"] == "revocation")
    path = entry["statusListCredential"].split("//", 1)[1].split("/", 1)[1]
    status, _, raw = server.call("GET", "/" + path)
    try:
        listed = jwt.JWT(jwt=raw.decode(), key=keyset, algs=["ES256"], check_claims={"exp": None})
        subject = json.loads(listed.claims)["vc"]["credentialSubject"]
        encoded = subject["encodedList"]
        bits = gzip.decompress(unb64url(encoded[1:]))
        index = int(entry["statusListIndex"])
        check(
            "the status list verifies and the credential's bit is clear",
            encoded[0] == "u" and len(bits) * 8 >= 131072 and not bits[index // 8] & (0x80 >> (index % 8)),
        )
    except Exception as error:  # noqa: BLE001
        check("the status list verifies and the credential's bit is clear", False, repr(error))

    # 5. The IAL2 presentation, signed here.
    status, challenge = server.json("POST", "/api/v1/session/presentation-challenge", {}, token)
    now = int(time.time())
    presentation = sign(
        device,
        {
            "iss": holder,
            "aud": challenge["audience"],
            "nonce": challenge["nonce"],
            "iat": now,
            "exp": now + 60,
            "vp": {"type": ["VerifiablePresentation"], "verifiableCredential": [credential]},
        },
        {"alg": "ES256", "typ": "vp+jwt"},
    )
    status, presented = server.json("POST", "/api/v1/session/presentation", {"presentation": presentation}, token)
    check("a presentation signed by jwcrypto opens an IAL2 session", status == 200 and presented["assurance"] == "IAL2", f"{status} {presented}")
    if status == 200:
        status, session = server.json("GET", "/api/v1/session", token=presented["token"])
        check("the new session is IAL2", status == 200 and session["assurance"] == "IAL2", f"{status} {session}")
        status, body = server.json(
            "POST", "/api/v1/session/presentation", {"presentation": presentation}, presented["token"]
        )
        check("a reused nonce is refused", status == 400, f"{status} {body}")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # noqa: BLE001 - report, do not hide
        check("the run completed", False, repr(error))
    failed = 0
    for name, passed, why in RESULTS:
        print(f"ok {name}" if passed else f"FAIL {name}: {why}")
        failed += not passed
    print(f"{len(RESULTS) - failed} passed, {failed} failed")
    sys.exit(1 if failed or not RESULTS else 0)

"""Our own Device Data Recorder: a ``medvault serve --dev`` process, set up
through the CLI as an operator and patients would.

* the server runs in a temporary data directory on free ports, with SQLite in
  that directory or the PostgreSQL database given;
* DiGAs get fresh self-signed client certificates (made here with
  ``cryptography``: P-256, 365 days, keyUsage digitalSignature, extendedKeyUsage
  clientAuth) and are registered with ``medvault admin diga add``;
* two patients register with ``medvault account register``, add a glucose
  meter and upload meter readings from a CSV file (``readings upload``), and
  get simulated CGM data (``simulate cgm``).
"""

import datetime
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CGM_MIV = "hddt-miv-continuous-glucose-measurement"
BG_MIV = "hddt-miv-blood-glucose-measurement"

# The DiGAs registered in the DiGA-VZ: name → (DiGA-ID, authorized MIVs).
# A: the main client. B: CGM only (scope and cross-DiGA refusals).
# C: for a patient's partial consent, then set inactive. D: removed from the
# DiGA-VZ near the end.
DIGAS = {
    "A": ("71001", [CGM_MIV, BG_MIV]),
    "B": ("71002", [CGM_MIV]),
    "C": ("71003", [CGM_MIV, BG_MIV]),
    "D": ("71004", [CGM_MIV]),
}


def make_client_certificate(directory, name, days=365):
    """A self-signed DiGA client certificate and key in ``directory``.

    Returns ``(cert_path, key_path)``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"conformance {name}")])
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, f"{name}.pem")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


class SetupError(Exception):
    """A CLI step of the set-up failed."""


class OurServer:
    """A running ``medvault serve --dev`` with its data directory and test data."""

    def __init__(self, binary, database=None):
        self.binary = binary
        self.database = database
        self.work = tempfile.mkdtemp(prefix="medvault-conformance-")
        self.data_dir = os.path.join(self.work, "data")
        self.process = None
        self.patient_url = None
        self.hddt_url = None
        self.log_path = os.path.join(self.work, "server.log")
        self.patients = {}
        self.digas = {}
        self.rogue = None

    # --- processes --------------------------------------------------------

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVAULT_")}
        env["MEDVAULT_LOG"] = "warn"
        return env

    def cli(self, args, stdin=None, profile=None):
        """Runs ``medvault ARGS``; its standard output (raises SetupError on failure)."""
        full = [self.binary] + list(args)
        if profile:
            full += ["--profile", profile]
        if stdin is not None:
            full.append("--password-stdin")
        done = subprocess.run(
            full, input=stdin or "", capture_output=True, text=True, env=self._env(), timeout=120
        )
        if done.returncode != 0:
            raise SetupError(
                f"{' '.join(args[:3])} exited {done.returncode}: {done.stderr.strip()[:400]}"
            )
        return done.stdout

    def admin(self, *args):
        """``medvault admin GROUP --data-dir D [--database U] ARGS``."""
        group, rest = args[0], list(args[1:])
        where = ["--data-dir", self.data_dir]
        if self.database:
            where += ["--database", self.database]
        return self.cli(["admin", group] + where + rest)

    def start(self):
        """Starts the server and waits for its addresses."""
        args = [
            self.binary,
            "serve",
            "--dev",
            "--data-dir",
            self.data_dir,
            "--listen",
            "127.0.0.1:0",
            "--hddt-listen",
            "127.0.0.1:0",
        ]
        if self.database:
            args += ["--database", self.database]
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, env=self._env(), text=True
        )
        found = queue.Queue()

        def read():
            for line in self.process.stdout:
                match = re.match(
                    r"medvault serving: patient https://(\S+) , HDDT \(mTLS\) https://(\S+)",
                    line,
                )
                if match:
                    found.put(match.groups())

        threading.Thread(target=read, daemon=True).start()
        try:
            patient, hddt = found.get(timeout=60)
        except queue.Empty:
            self.stop()
            raise SetupError(f"the server did not report its addresses; see {self.log_path}")
        self.patient_url = f"https://{patient}"
        self.hddt_url = f"https://{hddt}"
        self.ca_file = os.path.join(self.data_dir, "tls", "dev-ca.pem")

    @property
    def issuer_url(self):
        """The HDDT listener as the metadata names it (the dev certificate's host name)."""
        return self.hddt_url.replace("127.0.0.1", "localhost")

    def stop(self):
        """Stops the server (TERM, then KILL after 20 s)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def remove(self):
        """Deletes the temporary directory."""
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def sqlite_path(self):
        """The SQLite file (None with PostgreSQL)."""
        return None if self.database else os.path.join(self.data_dir, "medvault.db")

    # --- set-up ---------------------------------------------------------

    def register_digas(self):
        """Makes the DiGAs' certificates and registers them in the DiGA-VZ."""
        certs = os.path.join(self.work, "certs")
        os.makedirs(certs, exist_ok=True)
        for name, (number, mivs) in DIGAS.items():
            cert, key = make_client_certificate(certs, f"diga-{name.lower()}")
            client_id = f"urn:diga:bfarm:{number}"
            redirect = f"https://diga-{name.lower()}.conformance.example/callback"
            args = [
                "add",
                "--client-id",
                client_id,
                "--name",
                f"Conformance DiGA {name}",
                "--redirect-uri",
                redirect,
                "--cert",
                cert,
            ]
            for miv in mivs:
                args += ["--miv", miv]
            self.admin("diga", *args)
            self.digas[name] = {
                "client_id": client_id,
                "cert": cert,
                "key": key,
                "redirect_uri": redirect,
                "mivs": mivs,
            }
        self.rogue = make_client_certificate(certs, "unregistered")
        self.admin("diga", "reload")

    def set_diga_inactive(self, name):
        """Registers DiGA ``name`` again as inactive and reloads the registry."""
        diga = self.digas[name]
        args = [
            "add",
            "--client-id",
            diga["client_id"],
            "--name",
            f"Conformance DiGA {name}",
            "--redirect-uri",
            diga["redirect_uri"],
            "--cert",
            diga["cert"],
            "--inactive",
        ]
        for miv in diga["mivs"]:
            args += ["--miv", miv]
        self.admin("diga", *args)
        self.admin("diga", "reload")

    def remove_diga(self, name):
        """Removes DiGA ``name`` from the DiGA-VZ and reloads the registry."""
        self.admin("diga", "remove", self.digas[name]["client_id"])
        self.admin("diga", "reload")

    def register_auditor(self):
        """A third participant made auditor (``admin auditor add``); its profile."""
        profile = os.path.join(self.work, "auditor")
        email = f"hddt-auditor-{os.getpid()}@conformance.example"
        password = "conformance auditor passphrase\n"
        registered = self.cli(
            ["account", "register", "--server", self.patient_url + "/", "--tls-ca", self.ca_file,
             "--kind", "patient", "--email", email],
            stdin=password, profile=profile,
        )
        uid = re.search(r"^uid:\s*(\S+)", registered, re.M).group(1)
        self.cli(["account", "login", "--email", email], stdin=password, profile=profile)
        self.admin("auditor", "add", uid)
        return profile

    def audit_all(self):
        """Every audit entry, as an auditor sees them (``audit list --all``)."""
        profile = self.register_auditor()
        return self.cli(["audit", "list", "--all", "--limit", "100000"], profile=profile)

    def register_patient(self, label, cgm_days):
        """A patient with a meter, meter readings and ``cgm_days`` of CGM data."""
        profile = os.path.join(self.work, f"patient-{label}")
        email = f"hddt-{label}-{os.getpid()}@conformance.example"
        password = f"conformance passphrase {label}\n"
        registered = self.cli(
            [
                "account",
                "register",
                "--server",
                self.patient_url + "/",
                "--tls-ca",
                self.ca_file,
                "--kind",
                "patient",
                "--email",
                email,
            ],
            stdin=password,
            profile=profile,
        )
        uid = re.search(r"^uid:\s*(\S+)", registered, re.M).group(1)
        self.cli(["account", "login", "--email", email], stdin=password, profile=profile)
        added = self.cli(
            ["devices", "add", "glukko-meter-5", "--serial", f"M-{label}-1", "--unit", "mg/dL"],
            profile=profile,
        )
        meter = added.strip().rsplit(" ", 1)[-1]
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

        def at(delta):
            return (now - delta).strftime("%Y-%m-%dT%H:%M:%SZ")

        rows = ["device,time,value,unit,limit"]
        rows.append(f"{meter},{at(datetime.timedelta(days=29))},101,mg/dL,")
        for hours in range(1, 25):
            rows.append(f"{meter},{at(datetime.timedelta(hours=hours, minutes=7))},{90 + hours * 3},mg/dL,")
        rows.append(f"{meter},{at(datetime.timedelta(minutes=30))},,mg/dL,high")
        csv = os.path.join(self.work, f"meter-{label}.csv")
        with open(csv, "w") as out:
            out.write("\n".join(rows) + "\n")
        self.cli(["readings", "upload", csv], profile=profile)
        self.cli(["simulate", "cgm", "--days", str(cgm_days), "--seed", str(len(label))], profile=profile)
        self.patients[label] = {"uid": uid, "email": email, "profile": profile, "meter": meter}

    def ticket(self, patient):
        """A one-time login ticket for the consent page, made by ``patient``."""
        out = self.cli(["pairing", "ticket"], profile=self.patients[patient]["profile"])
        return re.search(r"login ticket:\s*(\S+)", out).group(1)

    def pairings(self, patient):
        """``medvault pairing list`` of ``patient``."""
        return self.cli(["pairing", "list"], profile=self.patients[patient]["profile"])

    def revoke_pairing(self, patient, pairing_id):
        """The patient ends a pairing from the CLI."""
        return self.cli(
            ["pairing", "revoke", pairing_id], profile=self.patients[patient]["profile"]
        )

    def audit_list(self, patient):
        """The patient's own audit entries (``medvault audit list``)."""
        return self.cli(["audit", "list"], profile=self.patients[patient]["profile"])

    def setup(self):
        """Everything a run needs: DiGAs, two patients with data."""
        self.register_digas()
        self.register_patient("primary", cgm_days=14)
        self.register_patient("secondary", cgm_days=2)

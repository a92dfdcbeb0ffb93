//! The smartcard working credential: a P-256 key on a PKCS#11 token, used
//! through `cryptoki`. The private key is generated on the token, marked
//! sensitive and not extractable, and never leaves it: the token signs
//! (`CKM_ECDSA` over a SHA-256 digest made here) and agrees ECDH secrets
//! (`CKM_ECDH1_DERIVE`; only the agreed secret, which is the KEK's input, is
//! read back). The credential's certificate is stored on the token next to the
//! key, so a later login needs only the token and its PIN.

use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::{Session as TokenSession, UserType};
use cryptoki::types::{AuthPin, Ulong};
use medvault_core::{Uid, WorkingCredentialKind};
use medvault_crypto::ecdsa_p256_fixed_to_der;
use zeroize::Zeroizing;

use crate::session::CredentialSigner;
use crate::{Client, ClientError, Session, now};

/// DER of the OID of prime256v1 (secp256r1): `CKA_EC_PARAMS` of a P-256 key.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

fn card_error(what: &'static str) -> impl Fn(Pkcs11Error) -> ClientError {
    move |_| ClientError::Unlock(what)
}

/// A PKCS#11 module (the library of a card reader's middleware, or SoftHSM2),
/// initialised once per process.
#[derive(Clone)]
pub struct Pkcs11Module(Pkcs11);

impl std::fmt::Debug for Pkcs11Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkcs11Module")
    }
}

impl Pkcs11Module {
    /// Loads and initialises the module at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ClientError> {
        let context = Pkcs11::new(path).map_err(|_| ClientError::Invalid("PKCS#11 module"))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(_) => return Err(ClientError::Invalid("PKCS#11 module")),
        }
        Ok(Self(context))
    }

    /// Opens the token labelled `token_label` and logs in with `pin`.
    pub fn open(&self, token_label: &str, pin: &str) -> Result<Smartcard, ClientError> {
        let slots = self
            .0
            .get_slots_with_token()
            .map_err(card_error("token slots"))?;
        let slot = slots
            .into_iter()
            .find(|slot| {
                self.0
                    .get_token_info(*slot)
                    .is_ok_and(|info| info.label() == token_label)
            })
            .ok_or(ClientError::Invalid("no token with that label"))?;
        let session = self
            .0
            .open_rw_session(slot)
            .map_err(card_error("token session"))?;
        match session.login(UserType::User, Some(&AuthPin::from(pin))) {
            // The login state is per token: another session may hold it already.
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(_) => return Err(ClientError::Unlock("token PIN")),
        }
        Ok(Smartcard {
            session: Arc::new(Mutex::new(session)),
            key_label: None,
        })
    }
}

/// A logged-in token, and (once chosen) the credential key on it.
#[derive(Clone)]
pub struct Smartcard {
    session: Arc<Mutex<TokenSession>>,
    key_label: Option<Vec<u8>>,
}

impl std::fmt::Debug for Smartcard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Smartcard")
    }
}

impl Smartcard {
    fn with_session<T>(
        &self,
        work: impl FnOnce(&TokenSession) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let session = self
            .session
            .lock()
            .map_err(|_| ClientError::Unlock("token session"))?;
        work(&session)
    }

    fn find(&self, class: ObjectClass) -> Result<ObjectHandle, ClientError> {
        let label = self
            .key_label
            .clone()
            .ok_or(ClientError::Invalid("no key chosen on the token"))?;
        self.with_session(|session| {
            let found = session
                .find_objects(&[Attribute::Class(class), Attribute::Label(label)])
                .map_err(card_error("token search"))?;
            match found.as_slice() {
                [handle] => Ok(*handle),
                _ => Err(ClientError::Invalid("no single such object on the token")),
            }
        })
    }

    /// Generates a new P-256 key pair on the token under `label` (the private
    /// key sensitive and not extractable) and chooses it; returns the public
    /// key (uncompressed point).
    pub fn generate_key(&mut self, label: &str) -> Result<Vec<u8>, ClientError> {
        let label_bytes = label.as_bytes().to_vec();
        let exists = self.with_session(|session| {
            session
                .find_objects(&[Attribute::Label(label_bytes.clone())])
                .map_err(card_error("token search"))
        })?;
        if !exists.is_empty() {
            return Err(ClientError::Invalid("the token has a key with that label"));
        }
        let public_template = [
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(label_bytes.clone()),
        ];
        let private_template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(true),
            Attribute::Label(label_bytes.clone()),
        ];
        self.with_session(|session| {
            session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public_template,
                    &private_template,
                )
                .map_err(card_error("key generation on the token"))
        })?;
        self.key_label = Some(label_bytes);
        self.public_key()
    }

    /// Chooses the existing key labelled `label`.
    pub fn use_key(&mut self, label: &str) -> Result<Vec<u8>, ClientError> {
        self.key_label = Some(label.as_bytes().to_vec());
        self.public_key()
    }

    /// The chosen key's public key (uncompressed point).
    pub fn public_key(&self) -> Result<Vec<u8>, ClientError> {
        let handle = self.find(ObjectClass::PUBLIC_KEY)?;
        let attributes = self.with_session(|session| {
            session
                .get_attributes(handle, &[AttributeType::EcPoint])
                .map_err(card_error("public key"))
        })?;
        let point = attributes
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::EcPoint(point) => Some(point),
                _ => None,
            })
            .ok_or(ClientError::Unlock("public key"))?;
        // CKA_EC_POINT is a DER OCTET STRING around the point; some tokens give it bare.
        match point.as_slice() {
            [0x04, 0x41, rest @ ..] if rest.len() == 65 => Ok(rest.to_vec()),
            [0x04, rest @ ..] if rest.len() == 64 => Ok(point),
            _ => Err(ClientError::Unlock("public key encoding")),
        }
    }

    /// Whether the token says the chosen private key is sensitive, was never
    /// extractable and cannot be extracted: it cannot leave the token.
    pub fn private_key_is_bound_to_token(&self) -> Result<bool, ClientError> {
        let handle = self.find(ObjectClass::PRIVATE_KEY)?;
        let attributes = self.with_session(|session| {
            session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                    ],
                )
                .map_err(card_error("key attributes"))
        })?;
        let mut checks = (false, false, false);
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(value) => checks.0 = value,
                Attribute::Extractable(value) => checks.1 = !value,
                Attribute::NeverExtractable(value) => checks.2 = value,
                _ => {}
            }
        }
        Ok(checks == (true, true, true))
    }

    /// Stores the credential's certificate on the token beside the key.
    pub fn store_certificate(&self, der: &[u8]) -> Result<(), ClientError> {
        let label = self
            .key_label
            .clone()
            .ok_or(ClientError::Invalid("no key chosen on the token"))?;
        // PKCS#11 requires CKA_SUBJECT on an X.509 certificate object.
        let subject = {
            use x509_parser::prelude::FromDer as _;
            let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(der)
                .map_err(|_| ClientError::Invalid("certificate"))?;
            parsed.subject().as_raw().to_vec()
        };
        self.with_session(|session| {
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::CertificateType(CertificateType::X_509),
                    Attribute::Token(true),
                    Attribute::Label(label),
                    Attribute::Subject(subject),
                    Attribute::Value(der.to_vec()),
                ])
                .map(|_| ())
                .map_err(card_error("certificate on the token"))
        })
    }

    /// The certificate stored with the chosen key.
    pub fn certificate(&self) -> Result<Vec<u8>, ClientError> {
        let handle = self.find(ObjectClass::CERTIFICATE)?;
        let attributes = self.with_session(|session| {
            session
                .get_attributes(handle, &[AttributeType::Value])
                .map_err(card_error("certificate"))
        })?;
        attributes
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::Value(value) => Some(value),
                _ => None,
            })
            .ok_or(ClientError::Unlock("certificate"))
    }
}

impl crate::DeviceKey for Smartcard {
    fn public_point(&self) -> Result<Vec<u8>, ClientError> {
        self.public_key()
    }

    fn sign_es256(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        // CKM_ECDSA over the SHA-256 digest returns the fixed r || s form.
        let handle = self.find(ObjectClass::PRIVATE_KEY)?;
        let digest = medvault_crypto::sha256(message);
        self.with_session(|session| {
            session
                .sign(&Mechanism::Ecdsa, handle, &digest)
                .map_err(card_error("signature on the token"))
        })
    }

    fn key_protection(&self) -> &'static str {
        "pkcs11"
    }
}

impl CredentialSigner for Smartcard {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        let handle = self.find(ObjectClass::PRIVATE_KEY)?;
        let digest = medvault_crypto::sha256(message);
        let fixed = self.with_session(|session| {
            session
                .sign(&Mechanism::Ecdsa, handle, &digest)
                .map_err(card_error("signature on the token"))
        })?;
        ecdsa_p256_fixed_to_der(&fixed).map_err(|_| ClientError::Unlock("signature on the token"))
    }

    fn agree(&self, ephemeral_public_key: &[u8]) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let handle = self.find(ObjectClass::PRIVATE_KEY)?;
        let length = Ulong::try_from(32usize).map_err(|_| ClientError::Unlock("key agreement"))?;
        self.with_session(|session| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), ephemeral_public_key);
            let secret = session
                .derive_key(
                    &Mechanism::Ecdh1Derive(params),
                    handle,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::Token(false),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                        Attribute::ValueLen(length),
                    ],
                )
                .map_err(card_error("key agreement on the token"))?;
            let value = session
                .get_attributes(secret, &[AttributeType::Value])
                .map_err(card_error("key agreement on the token"));
            // The session object goes whatever happened.
            let _ = session.destroy_object(secret);
            value?
                .into_iter()
                .find_map(|attribute| match attribute {
                    Attribute::Value(value) => Some(Zeroizing::new(value)),
                    _ => None,
                })
                .ok_or(ClientError::Unlock("key agreement on the token"))
        })
    }
}

impl Session {
    /// Enrols the key `label`, newly generated on `card`, as a smartcard
    /// credential, and stores its certificate on the card.
    pub async fn add_smartcard(
        &self,
        card: &mut Smartcard,
        label: &str,
    ) -> Result<medvault_proto::accounts::CredentialView, ClientError> {
        let public_key = card.generate_key(label)?;
        let view = self
            .add_external_key(WorkingCredentialKind::Smartcard, &public_key, card)
            .await?;
        card.store_certificate(view.certificate.as_slice())?;
        Ok(view)
    }
}

impl Client {
    /// Logs in with the smartcard credential whose key and certificate are
    /// the chosen ones on `card`.
    pub async fn login_smartcard(&self, card: &Smartcard) -> Result<Session, ClientError> {
        let certificate = card.certificate()?;
        let certified = self
            .ca()
            .verify_working_credential(&certificate, now())
            .map_err(|_| ClientError::Verification("smartcard certificate"))?;
        if certified.public_key != card.public_key()? {
            return Err(ClientError::Verification("smartcard certificate"));
        }
        let uid: Uid = certified
            .subject
            .uid
            .parse()
            .map_err(|_| ClientError::Verification("smartcard certificate"))?;
        let credential_id: Uid = certified
            .subject
            .working_credential_id
            .parse()
            .map_err(|_| ClientError::Verification("smartcard certificate"))?;
        self.login_signer(uid, credential_id, card).await
    }
}

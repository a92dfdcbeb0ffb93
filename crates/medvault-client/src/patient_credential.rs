//! The holder's side of the Patient Credential (spec 003): the device key's
//! credential request, checking an issued credential against its issuer's
//! published `did:web` document, the signed presentation that lifts a
//! session to IAL2, and the institution's status changes.

use medvault_crypto::SoftwareKey;
use medvault_crypto::did::{P256PublicKey, PublicJwk};
use medvault_crypto::jose::{JwsHeader, UnverifiedJws, sign_es256_with};
use medvault_crypto::random_fill;
use medvault_proto::credentials as proto;
use serde_json::{Value, json};

use crate::{Client, ClientError, Session, now};

/// The `client_id` medvault's SDK and CLI send (the server's default trusted
/// user agent).
pub const USER_AGENT_ID: &str = "medvault-cli";

/// How long a request or presentation made here is valid.
const MESSAGE_LIFETIME: i64 = 120;

/// A device key: where a Patient Credential is bound. In software
/// ([`SoftwareKey`], `key_protection` `software`) or on a PKCS#11 token
/// ([`crate::smartcard::Smartcard`], `pkcs11`: the private key never leaves it).
pub trait DeviceKey {
    /// The public key (uncompressed P-256 point).
    fn public_point(&self) -> Result<Vec<u8>, ClientError>;
    /// An ES256 signature (fixed `r || s`) over `message`.
    fn sign_es256(&self, message: &[u8]) -> Result<Vec<u8>, ClientError>;
    /// The request's `key_protection`.
    fn key_protection(&self) -> &'static str;
}

impl DeviceKey for SoftwareKey {
    fn public_point(&self) -> Result<Vec<u8>, ClientError> {
        Ok(self.public_key())
    }

    fn sign_es256(&self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        self.sign_jose(message)
            .map_err(|_| ClientError::Unlock("signing with the device key"))
    }

    fn key_protection(&self) -> &'static str {
        "software"
    }
}

fn public(key: &dyn DeviceKey) -> Result<P256PublicKey, ClientError> {
    P256PublicKey::from_uncompressed(&key.public_point()?)
        .map_err(|_| ClientError::Invalid("device key"))
}

/// The device key's DID (`did:key`, P-256).
pub fn device_did(key: &dyn DeviceKey) -> Result<String, ClientError> {
    Ok(public(key)?.did_key())
}

fn random_id() -> Result<String, ClientError> {
    let mut bytes = [0u8; 16];
    random_fill(&mut bytes).map_err(|_| ClientError::Unlock("random source"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn sign(key: &dyn DeviceKey, header: &JwsHeader, claims: &Value) -> Result<String, ClientError> {
    sign_es256_with(header, claims, |input| key.sign_es256(input))
        .map_err(|_| ClientError::Invalid("JWS"))?
}

/// A credential request (spec 003) signed by `key`: `sub` is the key's
/// `did:key`, `jwk` the same key, `exp` two minutes after `iat`; returns the
/// JWS and its `jti`.
pub fn credential_request(
    key: &dyn DeviceKey,
    code: &str,
    client_id: &str,
) -> Result<(String, String), ClientError> {
    let iat = now();
    let jti = random_id()?;
    let public = public(key)?;
    let claims = json!({
        "grant_type": "authorization_code",
        "sub": public.did_key(),
        "client_id": client_id,
        "key_protection": key.key_protection(),
        "code": code,
        "iat": iat,
        "exp": iat + MESSAGE_LIFETIME,
        "jti": jti,
        "jwk": public.to_jwk().ok_or(ClientError::Invalid("device key"))?,
    });
    Ok((sign(key, &JwsHeader::es256("JWT"), &claims)?, jti))
}

/// A presentation of `credential` over `nonce` for `audience`, signed by `key`.
pub fn presentation(
    key: &dyn DeviceKey,
    credential: &str,
    nonce: &str,
    audience: &str,
) -> Result<String, ClientError> {
    let iat = now();
    let holder = device_did(key)?;
    let claims = json!({
        "iss": holder,
        "aud": audience,
        "nonce": nonce,
        "iat": iat,
        "exp": iat + MESSAGE_LIFETIME,
        "jti": random_id()?,
        "vp": {
            "@context": ["https://www.w3.org/2018/credentials/v1"],
            "type": ["VerifiablePresentation"],
            "verifiableCredential": [credential],
        },
    });
    let mut header = JwsHeader::es256("vp+jwt");
    header.kid = Some(format!(
        "{holder}#{}",
        holder.trim_start_matches("did:key:")
    ));
    sign(key, &header, &claims)
}

/// The claims of a credential whose signature verified against its issuer's
/// published `did:web` document.
#[derive(Debug, Clone)]
pub struct CheckedCredential {
    /// The JWT payload.
    pub claims: Value,
    /// The issuer's DID.
    pub issuer: String,
}

impl Client {
    /// Verifies a credential at the server's verifier (signature, issuer
    /// trust, audience, times, type and current status).
    pub async fn verify_patient_credential(
        &self,
        credential: &str,
    ) -> Result<proto::VerifyResult, ClientError> {
        self.post(
            "api/v1/patient-credentials/verify",
            &proto::VerifyRequest {
                credential: credential.to_owned(),
            },
            None,
        )
        .await
    }

    /// Checks `credential` offline against the issuing institution's DID
    /// document (fetched from this server): the `kid` must be one of its
    /// assertion keys and the signature must verify.
    pub async fn check_patient_credential(
        &self,
        credential: &str,
    ) -> Result<CheckedCredential, ClientError> {
        let jws = UnverifiedJws::parse(credential)
            .map_err(|_| ClientError::Verification("credential is not an ES256 JWS"))?;
        let kid = jws
            .header()
            .kid
            .clone()
            .ok_or(ClientError::Verification("credential has no kid"))?;
        let claims: Value = jws
            .claims_unverified()
            .map_err(|_| ClientError::Verification("credential claims"))?;
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(ClientError::Verification("credential has no iss"))?
            .to_owned();
        let institution = issuer
            .rsplit_once(":institutions:")
            .map(|(_, uid)| uid)
            .ok_or(ClientError::Verification(
                "iss is not an institution of this server",
            ))?;
        if institution.len() != 36
            || !institution
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(ClientError::Verification(
                "iss is not an institution of this server",
            ));
        }
        let document: Value = self
            .get_public(&format!("institutions/{institution}/did.json"))
            .await?;
        if document.get("id").and_then(Value::as_str) != Some(issuer.as_str()) {
            return Err(ClientError::Verification(
                "the DID document is not the issuer's",
            ));
        }
        let method_id = format!("{issuer}#{kid}");
        let asserted = document
            .get("assertionMethod")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(&method_id)));
        let jwk: PublicJwk = document
            .get("verificationMethod")
            .and_then(Value::as_array)
            .and_then(|methods| {
                methods
                    .iter()
                    .find(|method| method.get("id").and_then(Value::as_str) == Some(&method_id))
            })
            .and_then(|method| method.get("publicKeyJwk"))
            .filter(|_| asserted)
            .and_then(|jwk| serde_json::from_value(jwk.clone()).ok())
            .ok_or(ClientError::Verification(
                "the issuer does not publish this key",
            ))?;
        let key = P256PublicKey::from_jwk(&jwk)
            .map_err(|_| ClientError::Verification("the issuer's key"))?;
        let verified = jws
            .verify::<Value>(&key)
            .map_err(|_| ClientError::Verification("the credential's signature"))?;
        Ok(CheckedCredential {
            claims: verified.claims,
            issuer,
        })
    }
}

impl Session {
    /// Asks for a Patient Credential bound to `key` with the one-time `code`
    /// from the proofing institution; checks what comes back (issuer's
    /// signature, `sub` = this key, `jti` = the request's, the type) before
    /// returning it.
    pub async fn request_patient_credential(
        &self,
        key: &dyn DeviceKey,
        code: &str,
    ) -> Result<proto::IssuedCredential, ClientError> {
        let (request, jti) = credential_request(key, code, USER_AGENT_ID)?;
        let issued: proto::IssuedCredential = self
            .client()
            .post(
                "api/v1/patient-credentials",
                &proto::IssueRequest { request },
                Some(self.token()),
            )
            .await?;
        let checked = self
            .client()
            .check_patient_credential(&issued.credential)
            .await?;
        let claims = &checked.claims;
        if claims.get("sub").and_then(Value::as_str) != Some(device_did(key)?.as_str())
            || claims.get("jti").and_then(Value::as_str) != Some(jti.as_str())
        {
            return Err(ClientError::Verification(
                "the credential is not for this device key or request",
            ));
        }
        let types = claims
            .pointer("/vc/type")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !["PatientCredential", "IAL2"]
            .iter()
            .all(|wanted| types.iter().any(|kind| kind.as_str() == Some(wanted)))
        {
            return Err(ClientError::Verification("not a PatientCredential at IAL2"));
        }
        Ok(issued)
    }

    /// The Patient Credentials held (a patient) or issued (an institution).
    pub async fn patient_credentials(&self) -> Result<Vec<proto::CredentialView>, ClientError> {
        let list: proto::CredentialList = self
            .client()
            .get("api/v1/patient-credentials", self.token())
            .await?;
        Ok(list.credentials)
    }

    /// The issuing institution sets a credential's status: `revoked`
    /// (final), `suspended` or `active`.
    pub async fn set_patient_credential_status(
        &self,
        id: &str,
        status: &str,
    ) -> Result<(), ClientError> {
        self.client()
            .post_empty(
                &format!("api/v1/patient-credentials/{id}/status"),
                &proto::StatusChange {
                    status: status.to_owned(),
                },
                self.token(),
            )
            .await
    }

    /// Presents `credential` with its device key over a fresh nonce; the
    /// server replaces this session by one at IAL2, whose token this session
    /// takes (export it again to keep it).
    pub async fn present_patient_credential(
        &mut self,
        key: &dyn DeviceKey,
        credential: &str,
    ) -> Result<proto::PresentedSession, ClientError> {
        let challenge: proto::PresentationChallenge = self
            .client()
            .post(
                "api/v1/session/presentation-challenge",
                &json!({}),
                Some(self.token()),
            )
            .await?;
        let presentation = presentation(key, credential, &challenge.nonce, &challenge.audience)?;
        let presented: proto::PresentedSession = self
            .client()
            .post(
                "api/v1/session/presentation",
                &proto::Presentation { presentation },
                Some(self.token()),
            )
            .await?;
        self.replace_token(presented.token.clone(), presented.expires_at.clone());
        Ok(presented)
    }
}

//! The password working credential: OPAQUE (RFC 9807) with opaque-ke.
//!
//! Suite: ristretto255 OPRF, 3DH over ristretto255 with SHA-512, Argon2id
//! (m = 19 MiB, t = 2, p = 1) as the key-stretching function — the suite the
//! browser library `@serenity-kit/opaque` speaks too. The stretching runs on the
//! client: the server never receives the password nor anything it could test
//! guesses against without its OPRF seed ([`OpaqueServerSetup`], a long-lived
//! secret). The client's `export_key`, the same at registration and at every
//! login, is the input from which the working credential's KEK is derived.
//!
//! These are sans-I/O message functions: the server and SDK carry the bytes.

use std::fmt;

use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialFinalization, CredentialRequest,
    CredentialResponse, Identifiers, RegistrationRequest, RegistrationResponse, RegistrationUpload,
    Ristretto255, ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup, TripleDh,
};
use rand_core_06::OsRng;
use zeroize::Zeroizing;

use crate::CryptoError;

/// The OPAQUE cipher suite of medvault's password credential.
#[derive(Debug, Clone, Copy)]
pub struct PasswordSuite;

impl opaque_ke::CipherSuite for PasswordSuite {
    type OprfCs = Ristretto255;
    type KeyExchange = TripleDh<Ristretto255, sha2_010::Sha512>;
    type Ksf = opaque_ke::argon2::Argon2<'static>;
}

/// The server's OPAQUE setup (OPRF seed and server key pair): a long-lived secret.
pub struct OpaqueServerSetup(ServerSetup<PasswordSuite>);

impl fmt::Debug for OpaqueServerSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpaqueServerSetup(<redacted>)")
    }
}

impl OpaqueServerSetup {
    /// A new random setup.
    pub fn generate() -> Self {
        Self(ServerSetup::new(&mut OsRng))
    }

    /// The setup's bytes, to store as a secret.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Reads a stored setup.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        ServerSetup::deserialize(bytes)
            .map(Self)
            .map_err(|_| CryptoError::Malformed)
    }
}

/// What the server stores per password credential (the OPAQUE "password file").
/// Useless without the server setup's OPRF seed.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordFile(Vec<u8>);

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordFile(<redacted>)")
    }
}

impl PasswordFile {
    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        ServerRegistration::<PasswordSuite>::deserialize(bytes)
            .map_err(|_| CryptoError::Malformed)?;
        Ok(Self(bytes.to_vec()))
    }
}

/// The client's `export_key`: input key material for the password credential's KEK.
pub struct ExportKey(Zeroizing<Vec<u8>>);

impl ExportKey {
    /// The key bytes (64).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ExportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportKey(<redacted>)")
    }
}

/// Client state between the two registration messages.
pub struct ClientRegistrationState(ClientRegistration<PasswordSuite>);

/// Client state between KE1 and KE2.
pub struct ClientLoginState(ClientLogin<PasswordSuite>);

/// Server state between KE2 and KE3.
pub struct ServerLoginState(ServerLogin<PasswordSuite>);

impl ServerLoginState {
    /// The state as bytes, for a server that keeps it in the database between
    /// KE2 and KE3 (so another node can finish the login). Secret: store it
    /// briefly and take it once.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialize().to_vec())
    }

    /// Reads [`Self::to_bytes`]'s form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        ServerLogin::<PasswordSuite>::deserialize(bytes)
            .map(Self)
            .map_err(|_| CryptoError::Malformed)
    }
}

impl fmt::Debug for ClientRegistrationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientRegistrationState(<redacted>)")
    }
}

impl fmt::Debug for ClientLoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientLoginState(<redacted>)")
    }
}

impl fmt::Debug for ServerLoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerLoginState(<redacted>)")
    }
}

/// Client, registration step 1: the request to send.
pub fn client_registration_start(
    password: &[u8],
) -> Result<(ClientRegistrationState, Vec<u8>), CryptoError> {
    let start = ClientRegistration::<PasswordSuite>::start(&mut OsRng, password)
        .map_err(|_| CryptoError::Encrypt)?;
    Ok((
        ClientRegistrationState(start.state),
        start.message.serialize().to_vec(),
    ))
}

/// Server, registration step 2: the response to a request, for the credential
/// `identifier` (e.g. the normalized email).
pub fn server_registration_respond(
    setup: &OpaqueServerSetup,
    request: &[u8],
    identifier: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let request = RegistrationRequest::<PasswordSuite>::deserialize(request)
        .map_err(|_| CryptoError::Malformed)?;
    let response = ServerRegistration::<PasswordSuite>::start(&setup.0, request, identifier)
        .map_err(|_| CryptoError::Encrypt)?;
    Ok(response.message.serialize().to_vec())
}

/// Client, registration step 3: the upload to send, and the export key.
pub fn client_registration_finish(
    state: ClientRegistrationState,
    password: &[u8],
    response: &[u8],
) -> Result<(Vec<u8>, ExportKey), CryptoError> {
    let response = RegistrationResponse::<PasswordSuite>::deserialize(response)
        .map_err(|_| CryptoError::Malformed)?;
    let finish = state
        .0
        .finish(
            &mut OsRng,
            password,
            response,
            ClientRegistrationFinishParameters::new(Identifiers::default(), None),
        )
        .map_err(|_| CryptoError::Encrypt)?;
    Ok((
        finish.message.serialize().to_vec(),
        ExportKey(Zeroizing::new(finish.export_key.to_vec())),
    ))
}

/// Server, registration step 4: the password file to store.
pub fn server_registration_finish(upload: &[u8]) -> Result<PasswordFile, CryptoError> {
    let upload = RegistrationUpload::<PasswordSuite>::deserialize(upload)
        .map_err(|_| CryptoError::Malformed)?;
    Ok(PasswordFile(
        ServerRegistration::finish(upload).serialize().to_vec(),
    ))
}

/// Client, login step 1: KE1.
pub fn client_login_start(password: &[u8]) -> Result<(ClientLoginState, Vec<u8>), CryptoError> {
    let start = ClientLogin::<PasswordSuite>::start(&mut OsRng, password)
        .map_err(|_| CryptoError::Encrypt)?;
    Ok((
        ClientLoginState(start.state),
        start.message.serialize().to_vec(),
    ))
}

/// Server, login step 2: KE2. With `password_file` `None` (unknown account) the
/// answer is indistinguishable from a real one, so accounts cannot be enumerated.
pub fn server_login_respond(
    setup: &OpaqueServerSetup,
    password_file: Option<&PasswordFile>,
    ke1: &[u8],
    identifier: &[u8],
) -> Result<(ServerLoginState, Vec<u8>), CryptoError> {
    let ke1 =
        CredentialRequest::<PasswordSuite>::deserialize(ke1).map_err(|_| CryptoError::Malformed)?;
    let file = password_file
        .map(|file| ServerRegistration::<PasswordSuite>::deserialize(&file.0))
        .transpose()
        .map_err(|_| CryptoError::Malformed)?;
    let start = ServerLogin::start(
        &mut OsRng,
        &setup.0,
        file,
        ke1,
        identifier,
        ServerLoginParameters::default(),
    )
    .map_err(|_| CryptoError::Encrypt)?;
    Ok((
        ServerLoginState(start.state),
        start.message.serialize().to_vec(),
    ))
}

/// Client, login step 3: KE3 to send, and the export key. Fails for a wrong
/// password (or an unknown account).
pub fn client_login_finish(
    state: ClientLoginState,
    password: &[u8],
    ke2: &[u8],
) -> Result<(Vec<u8>, ExportKey), CryptoError> {
    let ke2 = CredentialResponse::<PasswordSuite>::deserialize(ke2)
        .map_err(|_| CryptoError::Malformed)?;
    let finish = state
        .0
        .finish(
            &mut OsRng,
            password,
            ke2,
            ClientLoginFinishParameters::new(None, Identifiers::default(), None),
        )
        .map_err(|_| CryptoError::Decrypt)?;
    Ok((
        finish.message.serialize().to_vec(),
        ExportKey(Zeroizing::new(finish.export_key.to_vec())),
    ))
}

/// Server, login step 4: checks KE3. `Ok` means the client knew the password.
pub fn server_login_finish(state: ServerLoginState, ke3: &[u8]) -> Result<(), CryptoError> {
    let ke3 = CredentialFinalization::<PasswordSuite>::deserialize(ke3)
        .map_err(|_| CryptoError::Malformed)?;
    state
        .0
        .finish(ke3, ServerLoginParameters::default())
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyEncryptionKey, RootCredential, WrapBinding};

    const EMAIL: &[u8] = b"erika@example.org";

    fn register(setup: &OpaqueServerSetup, password: &[u8]) -> (PasswordFile, ExportKey) {
        let (state, request) = client_registration_start(password).unwrap();
        let response = server_registration_respond(setup, &request, EMAIL).unwrap();
        let (upload, export_key) = client_registration_finish(state, password, &response).unwrap();
        (server_registration_finish(&upload).unwrap(), export_key)
    }

    fn login(
        setup: &OpaqueServerSetup,
        file: Option<&PasswordFile>,
        password: &[u8],
    ) -> Result<ExportKey, CryptoError> {
        let (state, ke1) = client_login_start(password)?;
        let (server_state, ke2) = server_login_respond(setup, file, &ke1, EMAIL)?;
        let (ke3, export_key) = client_login_finish(state, password, &ke2)?;
        server_login_finish(server_state, &ke3)?;
        Ok(export_key)
    }

    #[test]
    fn login_yields_the_registration_export_key_which_unwraps_the_root_key() {
        let setup = OpaqueServerSetup::generate();
        let (file, registered) = register(&setup, b"correct horse battery staple");
        let binding = WrapBinding {
            uid: "uid".into(),
            working_credential_id: "password".into(),
        };
        let credential = RootCredential::generate().unwrap();
        let wrapped = KeyEncryptionKey::derive(registered.as_bytes(), &binding)
            .unwrap()
            .wrap(credential.private_key(), &binding)
            .unwrap();
        // A later login, after the server setup was stored and read back.
        let setup = OpaqueServerSetup::from_bytes(&setup.to_bytes()).unwrap();
        let file = PasswordFile::from_bytes(file.as_bytes()).unwrap();
        let export_key = login(&setup, Some(&file), b"correct horse battery staple").unwrap();
        assert_eq!(export_key.as_bytes(), registered.as_bytes());
        let kek = KeyEncryptionKey::derive(export_key.as_bytes(), &binding).unwrap();
        kek.unwrap(&wrapped, &binding).unwrap();
    }

    #[test]
    fn a_wrong_password_or_unknown_account_fails_on_the_client() {
        let setup = OpaqueServerSetup::generate();
        let (file, _) = register(&setup, b"correct horse battery staple");
        assert_eq!(
            login(&setup, Some(&file), b"Correct horse battery staple").unwrap_err(),
            CryptoError::Decrypt
        );
        assert_eq!(
            login(&setup, None, b"correct horse battery staple").unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn another_servers_setup_cannot_use_the_password_file() {
        let setup = OpaqueServerSetup::generate();
        let (file, _) = register(&setup, b"pw");
        let stolen_without_seed = OpaqueServerSetup::generate();
        assert_eq!(
            login(&stolen_without_seed, Some(&file), b"pw").unwrap_err(),
            CryptoError::Decrypt
        );
    }

    #[test]
    fn garbage_messages_are_refused_not_panicked_on() {
        let setup = OpaqueServerSetup::generate();
        assert_eq!(
            server_registration_respond(&setup, b"short", EMAIL).unwrap_err(),
            CryptoError::Malformed
        );
        assert!(server_login_respond(&setup, None, &[0u8; 96], EMAIL).is_err());
        assert_eq!(
            PasswordFile::from_bytes(&[1, 2, 3]).unwrap_err(),
            CryptoError::Malformed
        );
        assert_eq!(format!("{setup:?}"), "OpaqueServerSetup(<redacted>)");
    }
}

//! `did:web` identifiers of this server and of its institutions (W3C CCG
//! did:web method), and the DID documents that publish issuer keys.
//!
//! The server's public base URL `https://host[:port][/path]` becomes
//! `did:web:host[%3Aport][:path…]`; an institution is
//! `<server did>:institutions:<uid>`, resolved at
//! `<base>/institutions/<uid>/did.json`.

use medvault_core::Uid;
use medvault_crypto::did::PublicJwk;
use serde_json::{Value, json};
use url::Url;

/// The did:web names rooted at one public base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidWeb {
    base: Url,
    server: String,
}

impl DidWeb {
    /// The names under `base` (an `https` URL with a host).
    pub fn new(base: &Url) -> Option<Self> {
        let host = base.host_str()?;
        let mut server = format!("did:web:{host}");
        if let Some(port) = base.port() {
            server.push_str(&format!("%3A{port}"));
        }
        for segment in base.path_segments().into_iter().flatten() {
            if !segment.is_empty() {
                server.push(':');
                server.push_str(segment);
            }
        }
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Some(Self { base, server })
    }

    /// The server's own DID (the default audience of Patient Credentials).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An institution's DID (the `iss` of the credentials it issues).
    pub fn institution(&self, uid: Uid) -> String {
        format!("{}:institutions:{uid}", self.server)
    }

    /// The institution a DID of [`Self::institution`]'s form names.
    pub fn institution_uid(&self, did: &str) -> Option<Uid> {
        did.strip_prefix(&self.server)?
            .strip_prefix(":institutions:")?
            .parse()
            .ok()
    }

    /// `<base>/<path>` (path without a leading slash).
    pub fn url(&self, path: &str) -> String {
        self.base
            .join(path)
            .map(String::from)
            .unwrap_or_else(|_| format!("{}{path}", self.base))
    }

    /// The URL of an institution's status list for `purpose`.
    pub fn status_list(&self, uid: Uid, purpose: &str) -> String {
        self.url(&format!("institutions/{uid}/status/{purpose}"))
    }

    /// The DID document of an institution: its published issuer keys as
    /// `JsonWebKey2020` verification methods, usable for assertions.
    pub fn institution_document(&self, uid: Uid, keys: &[PublicJwk]) -> Value {
        let did = self.institution(uid);
        let methods: Vec<Value> = keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.kid.as_deref()?;
                Some(json!({
                    "id": format!("{did}#{kid}"),
                    "type": "JsonWebKey2020",
                    "controller": did,
                    "publicKeyJwk": jwk,
                }))
            })
            .collect();
        let ids: Vec<Value> = methods
            .iter()
            .filter_map(|method| method.get("id").cloned())
            .collect();
        json!({
            "@context": [
                "https://www.w3.org/ns/did/v1",
                "https://w3id.org/security/suites/jws-2020/v1"
            ],
            "id": did,
            "verificationMethod": methods,
            "assertionMethod": ids,
        })
    }

    /// The server's DID document (it names the server; it holds no keys:
    /// the server signs no credentials itself).
    pub fn server_document(&self) -> Value {
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": self.server,
            "service": [{
                "id": format!("{}#jwks", self.server),
                "type": "JsonWebKeySet",
                "serviceEndpoint": self.url(".well-known/jwks.json"),
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn names_follow_the_did_web_method() {
        let names = DidWeb::new(&"https://localhost:9443/".parse().unwrap()).unwrap();
        assert_eq!(names.server(), "did:web:localhost%3A9443");
        let uid: Uid = "0b6e2c34-8f5d-4c1e-9a3b-2d7f6e5c4b3a".parse().unwrap();
        let did = names.institution(uid);
        assert_eq!(
            did,
            "did:web:localhost%3A9443:institutions:0b6e2c34-8f5d-4c1e-9a3b-2d7f6e5c4b3a"
        );
        assert_eq!(names.institution_uid(&did), Some(uid));
        assert_eq!(
            names.institution_uid("did:web:evil.example:institutions:x"),
            None
        );
        assert_eq!(
            names.status_list(uid, "revocation"),
            "https://localhost:9443/institutions/0b6e2c34-8f5d-4c1e-9a3b-2d7f6e5c4b3a/status/revocation"
        );
        let nested = DidWeb::new(&"https://ddr.example.com/mv".parse().unwrap()).unwrap();
        assert_eq!(nested.server(), "did:web:ddr.example.com:mv");
        assert_eq!(
            nested.url("institutions/a/did.json"),
            "https://ddr.example.com/mv/institutions/a/did.json"
        );
    }
}

//! RFC 8414 authorization server metadata with every field gematik's guide
//! requires (§authorization-server-metadata-endpoint): PAR required, only
//! `tls_client_auth`, PKCE `S256`, tokens not certificate-bound, no request
//! objects, and the SMART scopes of the MIVs medvault serves.

use medvault_core::{Miv, SmartScope};
use serde_json::{Value, json};

/// Where the endpoints are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The `issuer` (the HDDT listener's base, registered in the HIIS-VZ).
    pub issuer: String,
    /// `/authorize`, on the patient listener (the browser's side, no mTLS).
    pub authorization_endpoint: String,
    /// Client registration information for DiGA developers.
    pub service_documentation: String,
}

/// The scopes offered: for each served MIV its Observation scope, plus
/// Device and DeviceMetric.
pub fn scopes_supported(value_set_base: &str) -> Vec<String> {
    Miv::SUPPORTED
        .into_iter()
        .map(SmartScope::Observation)
        .chain([SmartScope::Device, SmartScope::DeviceMetric])
        .map(|scope| scope.to_text(value_set_base))
        .collect()
}

/// The metadata document.
pub fn authorization_server_metadata(endpoints: &Endpoints, value_set_base: &str) -> Value {
    let issuer = endpoints.issuer.trim_end_matches('/');
    json!({
        "issuer": issuer,
        "authorization_endpoint": endpoints.authorization_endpoint,
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "require_pushed_authorization_requests": true,
        "token_endpoint": format!("{issuer}/token"),
        "token_endpoint_auth_methods_supported": ["tls_client_auth"],
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": ["tls_client_auth"],
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "tls_client_certificate_bound_access_tokens": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": scopes_supported(value_set_base),
        "service_documentation": endpoints.service_documentation,
    })
}

#[cfg(test)]
mod tests {
    use medvault_core::hddt::DEFAULT_VALUE_SET_BASE;

    use super::*;

    #[test]
    fn every_field_the_guide_lists_is_there() {
        let metadata = authorization_server_metadata(
            &Endpoints {
                issuer: "https://ddr.example:9443/".into(),
                authorization_endpoint: "https://ddr.example/authorize".into(),
                service_documentation: "https://ddr.example/docs/hddt".into(),
            },
            DEFAULT_VALUE_SET_BASE,
        );
        assert_eq!(metadata["issuer"], "https://ddr.example:9443");
        assert_eq!(
            metadata["pushed_authorization_request_endpoint"],
            "https://ddr.example:9443/par"
        );
        assert_eq!(metadata["require_pushed_authorization_requests"], true);
        assert_eq!(
            metadata["token_endpoint_auth_methods_supported"],
            json!(["tls_client_auth"])
        );
        assert_eq!(
            metadata["revocation_endpoint_auth_methods_supported"],
            json!(["tls_client_auth"])
        );
        assert_eq!(
            metadata["code_challenge_methods_supported"],
            json!(["S256"])
        );
        assert_eq!(
            metadata["tls_client_certificate_bound_access_tokens"],
            false
        );
        assert_eq!(metadata["request_parameter_supported"], false);
        assert_eq!(
            metadata["scopes_supported"],
            json!([
                "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-glucose-measurement",
                "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement",
                "patient/Device.rs",
                "patient/DeviceMetric.rs"
            ])
        );
        assert!(
            metadata["grant_types_supported"]
                .as_array()
                .unwrap_or(&Vec::new())
                .contains(&json!("authorization_code"))
        );
    }
}

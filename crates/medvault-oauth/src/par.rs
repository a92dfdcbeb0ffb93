//! The checks on a pushed authorization request (RFC 9126, guide
//! §authorization-server-par-endpoint), before anything is stored: the
//! client authenticated by its certificate (byte-identical to one of its
//! DiGA-VZ entry, the DiGA active), `response_type=code`, PKCE `S256`, the
//! `redirect_uri` and the scopes strictly against the registry, no request
//! objects. Each refusal is the guide's OAuth error.
//!
//! `prescription_end` (optional, `YYYY-MM-DD`) is medvault's documented
//! extension: the end of the DiGA's prescription, which caps the consent.

use medvault_core::{DigaClientId, ScopeSet};
use time::Date;
use time::macros::format_description;

use crate::error::OAuthError;
use crate::pkce::is_s256_challenge;
use crate::registry::{DigaRegistry, DigaStatus};

/// The most form parameters read.
pub const MAX_PARAMETERS: usize = 32;
/// The longest parameter value read.
pub const MAX_VALUE_LEN: usize = 4096;

/// A pushed request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The DiGA.
    pub client_id: DigaClientId,
    /// Its registered `redirect_uri`.
    pub redirect_uri: String,
    /// The scopes asked for (each MIV authorized for the DiGA).
    pub scopes: ScopeSet,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The DiGA's `state`, returned on the redirect.
    pub state: Option<String>,
    /// The prescription's last day, if the DiGA said.
    pub prescription_end: Option<Date>,
}

const KNOWN: [&str; 8] = [
    "client_id",
    "scope",
    "code_challenge",
    "code_challenge_method",
    "redirect_uri",
    "state",
    "response_type",
    "prescription_end",
];

/// Checks the form of a pushed request made over a connection that
/// presented `certificate` (DER), at `today`.
pub fn validate_par(
    form: &[(String, String)],
    certificate: &[u8],
    registry: &DigaRegistry,
    value_set_base: &str,
    today: Date,
) -> Result<AuthorizationRequest, OAuthError> {
    if form.len() > MAX_PARAMETERS || form.iter().any(|(_, value)| value.len() > MAX_VALUE_LEN) {
        return Err(OAuthError::invalid_request(
            "too many or too long parameters",
        ));
    }
    if form
        .iter()
        .any(|(name, _)| name == "request" || name == "request_uri")
    {
        return Err(OAuthError::invalid_request(
            "request objects and request_uri are not accepted in a pushed request",
        ));
    }
    let mut values: [Option<&str>; KNOWN.len()] = [None; KNOWN.len()];
    for (name, value) in form {
        // Unknown parameters are ignored (RFC 6749 §3.1); known ones appear once.
        if let Some(index) = KNOWN.iter().position(|known| known == name) {
            if values.get(index).copied().flatten().is_some() {
                return Err(OAuthError::invalid_request(format!("{name} appears twice")));
            }
            if let Some(slot) = values.get_mut(index) {
                *slot = Some(value.as_str());
            }
        }
    }
    let get = |name: &str| {
        KNOWN
            .iter()
            .position(|known| *known == name)
            .and_then(|index| values.get(index).copied().flatten())
    };
    let client_id = get("client_id")
        .and_then(DigaClientId::parse)
        .ok_or_else(OAuthError::unregistered_client)?;
    let entry = registry
        .get(&client_id)
        .filter(|entry| entry.status == DigaStatus::Active)
        .ok_or_else(OAuthError::unregistered_client)?;
    if !entry.has_certificate(certificate) {
        return Err(OAuthError::certificate_mismatch());
    }
    if get("response_type") != Some("code") {
        return Err(OAuthError::unsupported_response_type());
    }
    if get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::invalid_request(
            "PKCE with code_challenge_method=S256 is required",
        ));
    }
    let code_challenge = get("code_challenge")
        .filter(|challenge| is_s256_challenge(challenge))
        .ok_or_else(|| {
            OAuthError::invalid_request("code_challenge must be 43 characters of base64url")
        })?;
    if get("redirect_uri") != Some(entry.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_request(
            "redirect_uri does not match the registered one",
        ));
    }
    let scopes = ScopeSet::parse(get("scope").unwrap_or_default(), value_set_base)
        .map_err(|error| OAuthError::invalid_scope(error.to_string()))?;
    let mivs = scopes.mivs();
    if mivs.is_empty() {
        return Err(OAuthError::invalid_scope(
            "at least one MIV (patient/Observation.rs?code:in=...) must be requested",
        ));
    }
    if mivs
        .iter()
        .any(|miv| !entry.mivs.contains(miv) || !miv.is_supported())
    {
        return Err(OAuthError::scope_exceeds_grant());
    }
    let state = match get("state") {
        Some(state)
            if state.is_empty()
                || state.len() > 512
                || !state.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
        {
            return Err(OAuthError::invalid_request(
                "state must be 1 to 512 visible ASCII characters",
            ));
        }
        state => state.map(str::to_owned),
    };
    let prescription_end = get("prescription_end")
        .map(|text| {
            Date::parse(text, format_description!("[year]-[month]-[day]"))
                .ok()
                .filter(|date| *date >= today)
                .ok_or_else(|| {
                    OAuthError::invalid_request(
                        "prescription_end must be a date (YYYY-MM-DD) not in the past",
                    )
                })
        })
        .transpose()?;
    Ok(AuthorizationRequest {
        client_id,
        redirect_uri: entry.redirect_uri.clone(),
        scopes,
        code_challenge: code_challenge.to_owned(),
        state,
        prescription_end,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use medvault_core::Miv;
    use medvault_core::hddt::DEFAULT_VALUE_SET_BASE;
    use medvault_testkit::{TestCertificate, wall_clock_now};
    use time::macros::date;

    use super::*;
    use crate::registry::DigaRegistryEntry;

    const CGM: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement";
    const BP: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-pressure-value";
    const BG: &str = "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-blood-glucose-measurement";

    fn form(overrides: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
        let mut form: Vec<(String, String)> = [
            ("client_id", "urn:diga:bfarm:00294"),
            ("response_type", "code"),
            ("code_challenge_method", "S256"),
            ("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            ("redirect_uri", "https://diga.example/callback"),
            ("scope", "patient/Observation.rs?code:in=https://gematik.de/fhir/hddt/ValueSet/hddt-miv-continuous-glucose-measurement patient/Device.rs patient/DeviceMetric.rs"),
            ("state", "af0ifjsldkj"),
        ]
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
        for (name, value) in overrides {
            form.retain(|(n, _)| n != name);
            if let Some(value) = value {
                form.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        form
    }

    #[test]
    fn a_good_request_passes_and_each_bad_one_gets_the_guides_error() {
        let now = wall_clock_now();
        let certificate = TestCertificate::diga("DiGA 00294").der;
        let other_certificate = TestCertificate::diga("DiGA 00295").der;
        let mut registry = DigaRegistry::default();
        for (id, der, status, mivs) in [
            (
                "urn:diga:bfarm:00294",
                certificate.clone(),
                DigaStatus::Active,
                vec![Miv::ContinuousGlucose, Miv::BloodPressure],
            ),
            (
                "urn:diga:bfarm:00295",
                other_certificate.clone(),
                DigaStatus::Inactive,
                vec![Miv::BloodGlucose],
            ),
        ] {
            registry
                .upsert(
                    DigaRegistryEntry {
                        client_id: DigaClientId::parse(id).unwrap(),
                        name: "DiGA".into(),
                        status,
                        redirect_uri: "https://diga.example/callback".into(),
                        mivs,
                        certificates: vec![der],
                    },
                    now.unix_timestamp(),
                )
                .unwrap();
        }
        let today = now.date();
        let check = |form: &[(String, String)], der: &[u8]| {
            validate_par(form, der, &registry, DEFAULT_VALUE_SET_BASE, today)
        };
        let accepted = check(
            &form(&[("prescription_end", Some("2099-12-31"))]),
            &certificate,
        )
        .unwrap();
        assert_eq!(accepted.scopes.mivs(), vec![Miv::ContinuousGlucose]);
        assert_eq!(accepted.state.as_deref(), Some("af0ifjsldkj"));
        assert_eq!(accepted.prescription_end, Some(date!(2099 - 12 - 31)));
        assert!(
            check(
                &form(&[("state", None), ("ui_locales", Some("de"))]),
                &certificate
            )
            .is_ok()
        );

        let wildcard = "patient/*.rs";
        type Case<'a> = (Vec<(String, String)>, &'a [u8], u16, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                form(&[("client_id", Some("urn:diga:bfarm:99999"))]),
                &certificate,
                401,
                "invalid_client",
            ),
            (
                form(&[("client_id", Some("urn:diga:bfarm:00295"))]),
                &other_certificate,
                401,
                "invalid_client",
            ),
            (
                form(&[("client_id", None)]),
                &certificate,
                401,
                "invalid_client",
            ),
            (form(&[]), &other_certificate, 401, "invalid_client"),
            (
                form(&[("request", Some("eyJ..."))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("request_uri", Some("urn:x"))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("response_type", Some("token"))]),
                &certificate,
                400,
                "unsupported_response_type",
            ),
            (
                form(&[("code_challenge_method", None)]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("code_challenge_method", Some("plain"))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("code_challenge", Some("short"))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("redirect_uri", Some("https://diga.example/callback/"))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("scope", Some(wildcard))]),
                &certificate,
                400,
                "invalid_scope",
            ),
            (
                form(&[("scope", Some(BG))]),
                &certificate,
                400,
                "invalid_scope",
            ),
            (
                form(&[("scope", Some(BP))]),
                &certificate,
                400,
                "invalid_scope",
            ),
            (
                form(&[("scope", Some("patient/Device.rs"))]),
                &certificate,
                400,
                "invalid_scope",
            ),
            (
                form(&[("scope", Some(&format!("{CGM} {CGM}")))]),
                &certificate,
                400,
                "invalid_scope",
            ),
            (
                form(&[("state", Some(""))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("prescription_end", Some("2001-01-01"))]),
                &certificate,
                400,
                "invalid_request",
            ),
            (
                form(&[("prescription_end", Some("31.12.2099"))]),
                &certificate,
                400,
                "invalid_request",
            ),
        ];
        for (form, der, status, error) in cases {
            let refused = check(&form, der).unwrap_err();
            assert_eq!(
                (refused.status, refused.error),
                (status, error),
                "{form:?}: {refused}"
            );
        }
        let mut twice = form(&[]);
        twice.push(("scope".into(), CGM.into()));
        assert_eq!(
            check(&twice, &certificate).unwrap_err().error,
            "invalid_request"
        );
        let guide_text = check(&form(&[("scope", Some(BP))]), &certificate).unwrap_err();
        assert_eq!(
            guide_text.error_description,
            "The requested scope exceeds the scope granted to the client",
            "BP is authorized for the DiGA but not served here"
        );
        assert_eq!(
            check(&form(&[]), &other_certificate).unwrap_err().to_json(),
            r#"{"error":"invalid_client","error_description":"The client certificate is not registered for this client_id"}"#
        );
    }
}

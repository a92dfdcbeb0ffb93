//! Accounts and PKI over HTTP: registration, logins, sessions, credentials,
//! directory entries and the participant CA.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use medvault_accounts::{CredentialInfo, Enrolment, LoginGrant, PasswordEnrolment, Registration};
use medvault_core::{DisplayName, Email, ParticipantKind, Uid, WorkingCredentialKind};
use medvault_crypto::{EnrolmentSlot, RootPublicKey};
use medvault_proto::Bytes;
use medvault_proto::accounts as proto;

use super::{
    ApiJson, BearerSession, ClientAddress, credential_error, invalid, login_error,
    registration_error, rfc3339, store_error,
};
use crate::app::AppState;
use crate::problem::Problem;

/// The OpenAPI description of `/api/v1`, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/ca", get(ca))
        .route("/api/v1/participants", post(register))
        .route("/api/v1/participants/{uid}", get(directory_entry))
        .route("/api/v1/password/registration", post(password_registration))
        .route("/api/v1/login/password/start", post(password_login_start))
        .route("/api/v1/login/password/finish", post(password_login_finish))
        .route("/api/v1/login/code", post(code_login))
        .route("/api/v1/login/signature/start", post(signature_login_start))
        .route(
            "/api/v1/login/signature/finish",
            post(signature_login_finish),
        )
        .route("/api/v1/session", get(session).delete(logout))
        .route("/api/v1/credentials", get(credentials).post(add_credential))
        .route("/api/v1/credentials/{id}", delete(remove_credential))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn ca(State(state): State<AppState>) -> Json<proto::CaInfo> {
    Json(state.ca_info.as_ref().clone())
}

fn parse_uid(text: &str, field: &'static str) -> Result<Uid, Problem> {
    text.parse().map_err(|_| invalid(field))
}

fn parse_email(text: &str) -> Result<Email, Problem> {
    Email::parse(text).map_err(|_| invalid("email"))
}

fn enrolment(request: proto::EnrolmentRequest) -> Result<Enrolment, Problem> {
    let kind = WorkingCredentialKind::parse(&request.kind).ok_or_else(|| invalid("kind"))?;
    let password = request
        .password
        .map(|password| {
            Ok::<_, Problem>(PasswordEnrolment {
                email: parse_email(&password.email)?,
                registration_upload: password.registration_upload.into_vec(),
            })
        })
        .transpose()?;
    if request.slots.len() > usize::try_from(medvault_accounts::MAX_TANS).unwrap_or(100) {
        return Err(invalid("slots"));
    }
    Ok(Enrolment {
        id: parse_uid(&request.id, "credential id")?,
        kind,
        public_key: request.public_key.into_vec(),
        proof_of_possession: request.proof_of_possession.into_vec(),
        slots: request
            .slots
            .into_iter()
            .map(|slot| EnrolmentSlot {
                slot: slot.slot,
                proof: slot.proof.map(Bytes::into_vec),
                wrapped_root_key: slot.wrapped_root_key.into_vec(),
                wrapped_signing_key: slot.wrapped_signing_key.map(Bytes::into_vec),
                ecdh_public_key: slot.ecdh_public_key.map(Bytes::into_vec),
            })
            .collect(),
        password,
    })
}

fn credential_view(info: CredentialInfo) -> proto::CredentialView {
    proto::CredentialView {
        id: info.credential.id,
        kind: info.credential.kind,
        created_at: rfc3339(info.credential.created_at),
        certificate: info.credential.certificate.into(),
        remaining: info.remaining,
    }
}

fn login_response(grant: LoginGrant) -> Response {
    let Ok(slot) = u32::try_from(grant.key.slot) else {
        return super::internal(&"stored slot out of range");
    };
    Json(proto::LoginResponse {
        session_token: grant.token.expose().to_owned(),
        expires_at: rfc3339(grant.session.expires_at),
        uid: grant.session.uid.to_string(),
        credential: credential_view(CredentialInfo {
            credential: grant.credential,
            remaining: None,
        }),
        slot,
        wrapped_root_key: grant.key.wrapped_root_key.into(),
        wrapped_signing_key: grant.key.wrapped_signing_key.map(Bytes::from),
        ecdh_public_key: grant.key.ecdh_public_key.map(Bytes::from),
        root_key_certificate: grant.root_key_certificate,
    })
    .into_response()
}

async fn register(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<proto::RegistrationRequest>,
) -> Result<Response, Problem> {
    let uid = parse_uid(&request.uid, "uid")?;
    let kind = ParticipantKind::parse(&request.kind).ok_or_else(|| invalid("kind"))?;
    let display_name = request
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()
        .map_err(|_| invalid("display_name"))?;
    let root_public_key = RootPublicKey::from_bytes(request.root_public_key.as_slice())
        .map_err(|_| invalid("root_public_key"))?;
    let credentials = request
        .credentials
        .into_iter()
        .map(enrolment)
        .collect::<Result<Vec<_>, _>>()?;
    let registration = Registration {
        uid,
        kind,
        display_name,
        root_public_key,
        credentials,
    };
    let uid = match state.directory.register(registration).await {
        Ok(uid) => uid,
        Err(error) => return Ok(registration_error(error)),
    };
    let entry = match state.directory.entry(uid).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return Ok(super::internal(&"registered participant vanished")),
        Err(error) => return Ok(registration_error(error)),
    };
    let credentials = match state.store.working_credentials(&uid.to_string()).await {
        Ok(credentials) => credentials,
        Err(error) => return Ok(store_error(&error)),
    };
    Ok((
        StatusCode::CREATED,
        Json(proto::RegistrationResponse {
            uid: uid.to_string(),
            root_key_certificate: entry.root_key_certificate,
            credentials: credentials
                .into_iter()
                .map(|credential| {
                    credential_view(CredentialInfo {
                        credential,
                        remaining: None,
                    })
                })
                .collect(),
        }),
    )
        .into_response())
}

async fn directory_entry(
    State(state): State<AppState>,
    _session: BearerSession,
    Path(uid): Path<String>,
) -> Result<Response, Problem> {
    let uid = parse_uid(&uid, "uid")?;
    match state.directory.entry(uid).await {
        Ok(Some(entry)) => Ok(Json(proto::DirectoryEntryView {
            uid: entry.uid.to_string(),
            kind: entry.kind.as_str().to_owned(),
            display_name: entry.display_name.map(|name| name.as_str().to_owned()),
            root_public_key: entry.root_public_key.as_bytes().to_vec().into(),
            root_key_certificate: entry.root_key_certificate,
            working_credential_certificates: entry
                .working_credential_certificates
                .into_iter()
                .map(Bytes::from)
                .collect(),
        })
        .into_response()),
        Ok(None) => Err(Problem::new(StatusCode::NOT_FOUND, "No such participant")),
        Err(error) => Ok(registration_error(error)),
    }
}

async fn password_registration(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<proto::PasswordRegistrationRequest>,
) -> Result<Response, Problem> {
    let email = parse_email(&request.email)?;
    match state
        .accounts
        .password_registration_response(&email, request.registration_request.as_slice(), client)
        .await
    {
        Ok(response) => Ok(Json(proto::PasswordRegistrationResponse {
            registration_response: response.into(),
        })
        .into_response()),
        Err(error) => Ok(login_error(error)),
    }
}

async fn password_login_start(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<proto::PasswordLoginStart>,
) -> Result<Response, Problem> {
    let email = parse_email(&request.email)?;
    match state
        .accounts
        .password_login_start(&email, request.ke1.as_slice(), client)
        .await
    {
        Ok((challenge_id, ke2)) => Ok(Json(proto::PasswordLoginChallenge {
            challenge_id,
            ke2: ke2.into(),
        })
        .into_response()),
        Err(error) => Ok(login_error(error)),
    }
}

async fn password_login_finish(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<proto::PasswordLoginFinish>,
) -> Response {
    state
        .accounts
        .password_login_finish(&request.challenge_id, request.ke3.as_slice(), client)
        .await
        .map_or_else(login_error, login_response)
}

async fn code_login(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<proto::CodeLogin>,
) -> Result<Response, Problem> {
    let uid = parse_uid(&request.uid, "uid")?;
    let kind = match WorkingCredentialKind::parse(&request.kind) {
        Some(kind @ (WorkingCredentialKind::SuperPin | WorkingCredentialKind::Tan)) => kind,
        _ => return Err(invalid("kind")),
    };
    Ok(state
        .accounts
        .code_login(uid, kind, request.number, request.proof.as_slice(), client)
        .await
        .map_or_else(login_error, login_response))
}

async fn signature_login_start(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<proto::SignatureLoginStart>,
) -> Result<Response, Problem> {
    let uid = parse_uid(&request.uid, "uid")?;
    let credential_id = parse_uid(&request.credential_id, "credential_id")?;
    match state
        .accounts
        .signature_login_start(uid, credential_id, client)
        .await
    {
        Ok((challenge_id, nonce)) => Ok(Json(proto::SignatureLoginChallenge {
            challenge_id,
            nonce: nonce.into(),
        })
        .into_response()),
        Err(error) => Ok(login_error(error)),
    }
}

async fn signature_login_finish(
    State(state): State<AppState>,
    ClientAddress(client): ClientAddress,
    ApiJson(request): ApiJson<proto::SignatureLoginFinish>,
) -> Response {
    state
        .accounts
        .signature_login_finish(&request.challenge_id, request.signature.as_slice(), client)
        .await
        .map_or_else(login_error, login_response)
}

async fn session(BearerSession { session, .. }: BearerSession) -> Json<proto::SessionView> {
    Json(proto::SessionView {
        uid: session.uid.to_string(),
        credential_id: session.credential_id,
        expires_at: rfc3339(session.expires_at),
        assurance: session.assurance.as_str().to_owned(),
    })
}

async fn logout(State(state): State<AppState>, bearer: BearerSession) -> Response {
    match state.accounts.logout(&bearer.token).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => login_error(error),
    }
}

async fn credentials(State(state): State<AppState>, bearer: BearerSession) -> Response {
    match state.accounts.credentials(&bearer.session).await {
        Ok(list) => Json(proto::CredentialList {
            credentials: list.into_iter().map(credential_view).collect(),
        })
        .into_response(),
        Err(error) => store_error(&error),
    }
}

async fn add_credential(
    State(state): State<AppState>,
    bearer: BearerSession,
    ApiJson(request): ApiJson<proto::EnrolmentRequest>,
) -> Result<Response, Problem> {
    let enrolment = enrolment(request)?;
    Ok(
        match state
            .accounts
            .add_credential(&bearer.session, enrolment)
            .await
        {
            Ok(credential) => (
                StatusCode::CREATED,
                Json(credential_view(CredentialInfo {
                    credential,
                    remaining: None,
                })),
            )
                .into_response(),
            Err(error) => credential_error(error),
        },
    )
}

async fn remove_credential(
    State(state): State<AppState>,
    bearer: BearerSession,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = parse_uid(&id, "credential id")?;
    Ok(
        match state
            .accounts
            .remove_credential(&bearer.session, &id.to_string())
            .await
        {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => credential_error(error),
        },
    )
}

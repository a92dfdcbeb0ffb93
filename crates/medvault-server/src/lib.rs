//! The medvault server: the only crate that knows axum, HTTP and rustls server
//! configuration.
//!
//! It owns the validated [`config::Config`], the TLS policy and certificates
//! ([`tls`]), mutual-TLS client authentication against the live allow-list
//! ([`client_auth`]), HDDT's authorization endpoints, consent pages and DiGA-VZ refresh
//! ([`hddt`]), the FHIR resource server's HTTP side ([`fhir`]), the patient portal ([`portal`]), the TLS listener ([`listener`]), the routers and middleware
//! of both listeners ([`app`]), the problem+json error mapping ([`problem`]), and
//! start-up and shutdown ([`server`]). Handlers stay thin: extract, call a
//! domain service, map the result.

pub mod api;
pub mod app;
pub mod client_auth;
pub mod config;
pub mod fhir;
pub mod hddt;
pub mod html;
pub mod listener;
pub mod portal;
pub mod problem;
pub mod request_log;
pub mod server;
pub mod tls;

pub use config::{Config, ConfigError, RawConfig};
pub use server::{RunningServer, StartError, start, start_with_routes};

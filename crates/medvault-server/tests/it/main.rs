//! Integration tests of the server through real TLS connections, each against an
//! in-process server from medvault-testkit.

mod http;
mod mtls;
mod tls_policy;

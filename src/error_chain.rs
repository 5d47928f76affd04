//! Error messages with their causes.

/// `e` and each of its sources, joined by `": "`. reqwest's own message is
/// only "error sending request for url (...)"; the reason a user can act on
/// (connection refused, a TLS certificate of an unknown issuer, ...) is in
/// the sources.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

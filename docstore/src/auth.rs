//! `saslStart` / `saslContinue` (and the `speculativeAuthenticate` part of `hello`, the
//! same first step folded into the handshake): SCRAM-SHA-256 against the tenant the
//! embedding program names, on the database that tenant owns.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};

use crate::error::{Code, CommandError, CommandResult};
use crate::scram::{self, Conversation, ScramError};
use crate::server::{Inner, Tenant};

/// A connection's authentication: where it is in a conversation, and who it proved to be.
#[derive(Default)]
pub enum AuthState {
    #[default]
    None,
    /// Between saslStart and its saslContinue.
    Started {
        conversation: Conversation,
        tenant: Option<Tenant>,
        skip_empty: bool,
    },
    /// The proof was checked; an empty saslContinue finishes (no `skipEmptyExchange`).
    Proved {
        tenant: Tenant,
    },
    Done {
        tenant: Tenant,
    },
}

fn payload_of(cmd: &Document) -> Result<Vec<u8>, CommandError> {
    match cmd.get("payload") {
        Some(Bson::Binary(b)) => Ok(b.bytes.clone()),
        Some(Bson::String(s)) => Ok(s.clone().into_bytes()),
        _ => Err(CommandError::new(Code::BadValue, "payload must be binary data")),
    }
}

fn binary(bytes: Vec<u8>) -> Bson {
    Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes })
}

fn failed() -> CommandError {
    CommandError::new(Code::AuthenticationFailed, "Authentication failed.")
}

fn scram_error(e: ScramError) -> CommandError {
    match e {
        ScramError::Failed => failed(),
        ScramError::Protocol(m) => CommandError::new(Code::BadValue, m),
    }
}

/// `saslStart {mechanism, payload, options: {skipEmptyExchange}}` on database `db`.
pub fn sasl_start(server: &Inner, state: &mut AuthState, cmd: &Document, db: &str) -> CommandResult {
    let mechanism = cmd.get_str("mechanism").unwrap_or_default();
    if mechanism != scram::MECHANISM {
        return Err(CommandError::new(
            Code::MechanismUnavailable,
            format!("Received authentication for mechanism {mechanism} which is not enabled"),
        ));
    }
    let payload = payload_of(cmd)?;
    let user = scram::user_of(&payload).map_err(scram_error)?;
    // A user authenticates on its own database (`authSource`) and nowhere else.
    let tenant = server.resolver.tenant(&user).filter(|t| t.db == db);
    let credentials = tenant.as_ref().map(|t| server.credentials(t));
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).expect("the OS has randomness");
    let (conversation, reply) = Conversation::start(
        &payload,
        credentials,
        server.salt(&user),
        server.config.scram_iterations,
        &URL_SAFE_NO_PAD.encode(nonce),
    )
    .map_err(scram_error)?;
    let skip_empty =
        cmd.get_document("options").ok().and_then(|o| o.get_bool("skipEmptyExchange").ok()).unwrap_or(false);
    *state = AuthState::Started { conversation, tenant, skip_empty };
    Ok(doc! {"conversationId": 1, "done": false, "payload": binary(reply), "ok": 1.0})
}

/// `saslContinue {conversationId, payload}`.
pub fn sasl_continue(state: &mut AuthState, cmd: &Document) -> CommandResult {
    match std::mem::take(state) {
        AuthState::Started { conversation, tenant, skip_empty } => {
            let server_final = conversation.finish(&payload_of(cmd)?).map_err(scram_error)?;
            let tenant = tenant.ok_or_else(failed)?;
            tracing::debug!(user = %tenant.user, "database client authenticated");
            *state = if skip_empty { AuthState::Done { tenant } } else { AuthState::Proved { tenant } };
            Ok(doc! {"conversationId": 1, "done": skip_empty, "payload": binary(server_final), "ok": 1.0})
        }
        AuthState::Proved { tenant } => {
            *state = AuthState::Done { tenant };
            Ok(doc! {"conversationId": 1, "done": true, "payload": binary(Vec::new()), "ok": 1.0})
        }
        other => {
            *state = other;
            Err(CommandError::new(Code::BadValue, "No SASL session state found"))
        }
    }
}

/// The `speculativeAuthenticate` part of a `hello`: a saslStart folded into it. On any
/// failure it is left out (the driver then runs saslStart itself).
pub fn speculative(server: &Inner, state: &mut AuthState, hello: &Document) -> Option<Document> {
    let spec = hello.get_document("speculativeAuthenticate").ok()?;
    let db = spec.get_str("db").ok()?;
    let mut reply = sasl_start(server, state, spec, db).ok()?;
    reply.remove("ok");
    Some(reply)
}

impl AuthState {
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            AuthState::Done { tenant } => Some(tenant),
            _ => None,
        }
    }
}

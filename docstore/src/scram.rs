//! SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, as MongoDB runs it through
//! `saslStart` / `saslContinue`: the client proves it knows the password without sending
//! it, and the server proves it knows the stored key. Hand-written over RustCrypto's
//! `hmac`, `sha2` and `pbkdf2` (the SCRAM crates are client-oriented and bring their own
//! crypto choices); the proof is compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const MECHANISM: &str = "SCRAM-SHA-256";

/// What the server keeps of a password: enough to check a proof, not to make one.
#[derive(Clone)]
pub struct Credentials {
    pub salt: Vec<u8>,
    pub iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

impl Credentials {
    /// Derives the keys from a password. The passwords this server is given are ASCII
    /// (tankd derives them as hex), so SASLprep leaves them as they are.
    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> Credentials {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        Credentials { salt, iterations, stored_key, server_key }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The message does not follow the protocol; the text says where.
    #[error("{0}")]
    Protocol(String),
    /// The proof is wrong (or the user unknown: the two are not told apart).
    #[error("Authentication failed.")]
    Failed,
}

fn protocol(what: &str) -> ScramError {
    ScramError::Protocol(format!("SCRAM: {what}"))
}

/// The user named in a client-first message (`n,,n=<user>,r=<nonce>`), unescaped.
pub fn user_of(client_first: &[u8]) -> Result<String, ScramError> {
    Ok(parse_client_first(client_first)?.user)
}

struct ClientFirst {
    user: String,
    nonce: String,
    bare: String,
}

fn parse_client_first(msg: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = std::str::from_utf8(msg).map_err(|_| protocol("the first message is not UTF-8"))?;
    // gs2 header: no channel binding ("n") or "y" (client supports it, server does not
    // advertise it); "p=" asks for binding this server does not do. No authzid.
    let bare = text
        .strip_prefix("n,,")
        .or_else(|| text.strip_prefix("y,,"))
        .ok_or_else(|| protocol("channel binding and authorization identities are not supported"))?;
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        match attr.split_once('=') {
            Some(("n", v)) => user = Some(unescape(v)?),
            Some(("r", v)) if !v.is_empty() => nonce = Some(v.to_owned()),
            Some(("m", _)) => return Err(protocol("mandatory extensions are not supported")),
            _ => {}
        }
    }
    Ok(ClientFirst {
        user: user.ok_or_else(|| protocol("no user name"))?,
        nonce: nonce.ok_or_else(|| protocol("no client nonce"))?,
        bare: bare.to_owned(),
    })
}

fn unescape(name: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(protocol("a bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One conversation, between its first and its final message.
pub struct Conversation {
    credentials: Option<Credentials>,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Conversation {
    /// Answers the client-first message. `credentials` is `None` for an unknown user:
    /// the conversation goes on with a made-up salt and fails at the proof, like a wrong
    /// password. `server_nonce` is fresh randomness (printable, no comma).
    pub fn start(
        client_first: &[u8],
        credentials: Option<Credentials>,
        fake_salt: Vec<u8>,
        iterations: u32,
        server_nonce: &str,
    ) -> Result<(Conversation, Vec<u8>), ScramError> {
        let first = parse_client_first(client_first)?;
        let nonce = format!("{}{server_nonce}", first.nonce);
        let (salt, iterations) = match &credentials {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt, iterations),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let reply = server_first.clone().into_bytes();
        Ok((Conversation { credentials, client_first_bare: first.bare, server_first, nonce }, reply))
    }

    /// Checks the client-final message's proof; the server-final message (`v=<signature>`).
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(client_final).map_err(|_| protocol("the final message is not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| protocol("no proof"))?;
        let mut binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        // base64("n,,") or base64("y,,"): the gs2 header again, no binding data.
        if !matches!(binding, Some("biws" | "eSws")) {
            return Err(protocol("unexpected channel binding"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(protocol("the nonce does not match"));
        }
        let proof = B64.decode(proof).map_err(|_| protocol("the proof is not base64"))?;
        let Some(creds) = self.credentials else { return Err(ScramError::Failed) };
        if proof.len() != 32 {
            return Err(ScramError::Failed);
        }
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let signature = hmac(&creds.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        if !bool::from(stored.ct_eq(&creds.stored_key)) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&creds.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client side, for tests: the final message for a server-first, and the server
/// signature it must then see.
#[cfg(test)]
pub(crate) fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> (String, String) {
    let mut salt = None;
    let mut iterations = 0;
    let mut nonce = "";
    for attr in server_first.split(',') {
        match attr.split_once('=') {
            Some(("r", v)) => nonce = v,
            Some(("s", v)) => salt = Some(B64.decode(v).unwrap()),
            Some(("i", v)) => iterations = v.parse().unwrap(),
            _ => {}
        }
    }
    let creds = Credentials::derive(password, salt.unwrap(), iterations);
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &creds.salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&creds.stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(signature).map(|(k, s)| k ^ s).collect();
    let server_signature = hmac(&creds.server_key, auth_message.as_bytes());
    (format!("{without_proof},p={}", B64.encode(proof)), format!("v={}", B64.encode(server_signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, byte for byte.
    #[test]
    fn the_rfc_7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds = Credentials::derive("pencil", salt, 4096);
        let (conv, first) = Conversation::start(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            Some(creds),
            vec![],
            0,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = conv
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(String::from_utf8(last).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn a_wrong_password_an_unknown_user_and_a_replayed_nonce_fail() {
        let creds = || Some(Credentials::derive("right", b"salt-of-sixteen!".to_vec(), 4096));
        let start = |creds| Conversation::start(b"n,,n=svc,r=abc", creds, b"fake-salt".to_vec(), 4096, "XYZ").unwrap();
        let (conv, first) = start(creds());
        let (wrong, _) = client_final("wrong", "n=svc,r=abc", std::str::from_utf8(&first).unwrap());
        assert_eq!(conv.finish(wrong.as_bytes()).err(), Some(ScramError::Failed));
        let (conv, first) = start(None);
        let (any, _) = client_final("right", "n=svc,r=abc", std::str::from_utf8(&first).unwrap());
        assert_eq!(
            conv.finish(any.as_bytes()).err(),
            Some(ScramError::Failed),
            "unknown user fails like a bad password"
        );
        let (conv, first) = start(creds());
        let (right, server_sig) = client_final("right", "n=svc,r=abc", std::str::from_utf8(&first).unwrap());
        let replayed = right.replace("r=abcXYZ", "r=abcOTHER");
        let (conv2, _) = start(creds());
        assert!(matches!(conv2.finish(replayed.as_bytes()), Err(ScramError::Protocol(_))));
        assert_eq!(conv.finish(right.as_bytes()).unwrap(), server_sig.into_bytes());
    }

    #[test]
    fn client_first_messages_are_checked() {
        assert_eq!(user_of(b"n,,n=a=2Cb=3Dc,r=x").unwrap(), "a,b=c");
        for bad in [&b"p=tls-unique,,n=u,r=x"[..], b"n,a=admin,n=u,r=x", b"n,,r=x", b"n,,n=u", b"n,,n=a=2X,r=x"] {
            assert!(matches!(user_of(bad), Err(ScramError::Protocol(_))), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

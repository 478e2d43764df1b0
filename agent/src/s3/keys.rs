//! S3 credentials and bucket names, derived from the master secret and the service id
//! with the scheme the service tokens use: nothing is stored, so re-provisioning hands
//! out the same values and a restart needs no key file.

use sha2::{Digest, Sha256};

use crate::master_secret::MasterSecret;

const ACCESS_KEY_LABEL: &str = "tankd/v1/s3-access-key";
const SECRET_KEY_LABEL: &str = "tankd/v1/s3-secret-key";
const ADMIN_ACCESS_KEY_LABEL: &str = "tankd/v1/s3-admin-access-key";
const ADMIN_SECRET_KEY_LABEL: &str = "tankd/v1/s3-admin-secret-key";

/// An access key id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub access_key: String,
    pub secret_key: String,
}

// Hand-written so a secret never reaches a log line.
impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("access_key", &self.access_key).field("secret_key", &"<secret>").finish()
    }
}

/// AWS-shaped: a 20-character upper-case id (`TK` for a service, `TA` for the node's
/// admin) and a 40-character secret (160 bits, hex so no client needs quoting).
fn pair(secret: &MasterSecret, prefix: &str, labels: (&str, &str), subject: &str) -> KeyPair {
    KeyPair {
        access_key: format!("{prefix}{}", secret.derive(labels.0, subject)[..18].to_ascii_uppercase()),
        secret_key: secret.derive(labels.1, subject)[..40].to_owned(),
    }
}

pub fn service_keys(secret: &MasterSecret, service: &str) -> KeyPair {
    pair(secret, "TK", (ACCESS_KEY_LABEL, SECRET_KEY_LABEL), service)
}

pub fn admin_keys(secret: &MasterSecret) -> KeyPair {
    pair(secret, "TA", (ADMIN_ACCESS_KEY_LABEL, ADMIN_SECRET_KEY_LABEL), "")
}

/// The bucket a service is provisioned: its id when that is already a valid bucket name,
/// else the id made valid (lower case, `_` → `-`, cut) plus 8 hex digits of its SHA-256,
/// so two ids that clean up alike (`Svc_1`, `svc-1`) still get different buckets.
pub fn service_bucket(service: &str) -> String {
    if objstore::check_bucket_name(service).is_ok() {
        return service.to_owned();
    }
    let mut clean: String = service
        .chars()
        .map(|c| match c {
            'A'..='Z' => c.to_ascii_lowercase(),
            'a'..='z' | '0'..='9' | '-' => c,
            _ => '-',
        })
        .collect();
    clean.truncate(54);
    let clean = clean.trim_matches('-');
    let hash = hex::encode(&Sha256::digest(service.as_bytes())[..4]);
    if clean.is_empty() { format!("svc-{hash}") } else { format!("{clean}-{hash}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_distinct_and_aws_shaped() {
        let secret = MasterSecret::from_bytes(&[7; 32]);
        let a = service_keys(&secret, "svc-a");
        assert_eq!(a, service_keys(&secret, "svc-a"), "derived, so provisioning again hands out the same");
        assert_ne!(a, service_keys(&secret, "svc-b"));
        assert_ne!(a, service_keys(&MasterSecret::from_bytes(&[8; 32]), "svc-a"), "another node, other keys");
        assert!(a.access_key.starts_with("TK") && a.access_key.len() == 20);
        assert!(a.access_key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
        assert_eq!(a.secret_key.len(), 40);
        let admin = admin_keys(&secret);
        assert!(admin.access_key.starts_with("TA") && admin.access_key != a.access_key);
        assert!(!format!("{a:?}").contains(&a.secret_key));
    }

    #[test]
    fn bucket_names_are_valid_and_do_not_collide() {
        assert_eq!(service_bucket("svc-a"), "svc-a");
        for id in ["Svc_1", "svc_1", "ab", "A.", "x".repeat(128).as_str(), "__", "web.1"] {
            let b = service_bucket(id);
            assert!(objstore::check_bucket_name(&b).is_ok(), "{id} → {b}");
        }
        assert_ne!(service_bucket("Svc_1"), service_bucket("svc_1"));
        assert_ne!(service_bucket("Svc_1"), "svc-1");
    }
}

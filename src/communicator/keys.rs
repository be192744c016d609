//! Per-build ed25519 key pairs.

use std::fmt;
use std::sync::Arc;

use rand::TryRngCore;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
use russh::keys::{HashAlg, PrivateKey};

use super::error::SshError;

/// An ed25519 key pair generated for one build.
///
/// `Debug` prints only the public fingerprint, never the private half.
#[derive(Clone)]
pub struct KeyPair {
    key: Arc<PrivateKey>,
}

impl KeyPair {
    /// Generates a fresh ed25519 key pair from the operating system RNG.
    pub fn generate() -> Result<Self, SshError> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut seed).map_err(key_error)?;
        let pair = Ed25519Keypair::from_seed(&seed);
        seed.fill(0);
        let key = PrivateKey::new(KeypairData::Ed25519(pair), "").map_err(key_error)?;
        Ok(Self { key: Arc::new(key) })
    }

    /// The public key in `authorized_keys` format: `ssh-ed25519 AAAA… comment`.
    pub fn public_openssh(&self, comment: &str) -> String {
        let mut public = self.key.public_key().clone();
        public.set_comment(comment);
        match public.to_openssh() {
            Ok(text) => text,
            // Encoding an in-memory ed25519 key cannot fail; keep a usable fallback anyway.
            Err(_) => format!("ssh-ed25519 {}", self.fingerprint()),
        }
    }

    /// The private key in OpenSSH format (`-----BEGIN OPENSSH PRIVATE KEY-----`),
    /// unencrypted. The caller is responsible for writing it with mode 0600.
    pub fn private_openssh_pem(&self) -> Result<String, SshError> {
        let text = self.key.to_openssh(LineEnding::LF).map_err(key_error)?;
        Ok(text.as_str().to_owned())
    }

    /// `SHA256:…` fingerprint of the public key, like `ssh-keygen -lf`.
    pub fn fingerprint(&self) -> String {
        self.key.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    pub(crate) fn private_key(&self) -> Arc<PrivateKey> {
        Arc::clone(&self.key)
    }
}

fn key_error(e: impl std::error::Error + Send + Sync + 'static) -> SshError {
    SshError::KeyGen { source: Box::new(e) }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

//! The one streaming file hasher: SHA-256 and/or SHA-512 fed from the same
//! buffer, so a large image is read once whatever the number of digests.
//! Export, the local and S3 stores, checksum checks of downloads and S3
//! uploads all hash through [`MultiHasher`].

use std::collections::BTreeMap;
use std::io::{self, Read};

use sha2::Digest as _;

use crate::sums::Algo;

/// Read size of [`hash_reader`]: large enough that syscalls do not dominate.
pub const READ_BUFFER: usize = 1 << 20;

/// Several digests of one byte stream, fed together.
#[derive(Clone)]
pub struct MultiHasher {
    sha256: Option<sha2::Sha256>,
    sha512: Option<sha2::Sha512>,
    size: u64,
}

/// What a [`MultiHasher`] saw: the byte count and each digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    /// Lowercase hex per algorithm, for the algorithms asked for.
    pub hex: BTreeMap<Algo, String>,
}

impl Digests {
    pub fn get(&self, algo: Algo) -> Option<&str> {
        self.hex.get(&algo).map(String::as_str)
    }

    /// The SHA-256 (empty when it was not asked for).
    pub fn sha256(&self) -> String {
        self.get(Algo::Sha256).unwrap_or_default().to_string()
    }
}

impl MultiHasher {
    pub fn new(algos: &[Algo]) -> Self {
        MultiHasher {
            sha256: algos.contains(&Algo::Sha256).then(sha2::Sha256::new),
            sha512: algos.contains(&Algo::Sha512).then(sha2::Sha512::new),
            size: 0,
        }
    }

    /// SHA-256, plus SHA-512 when `with_sha512`.
    pub fn sha256_and(with_sha512: bool) -> Self {
        if with_sha512 { Self::new(&[Algo::Sha256, Algo::Sha512]) } else { Self::new(&[Algo::Sha256]) }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(data);
        }
    }

    pub fn finish(self) -> Digests {
        let mut hex = BTreeMap::new();
        if let Some(h) = self.sha256 {
            hex.insert(Algo::Sha256, hex::encode(h.finalize()));
        }
        if let Some(h) = self.sha512 {
            hex.insert(Algo::Sha512, hex::encode(h.finalize()));
        }
        Digests { size: self.size, hex }
    }
}

/// Feeds everything `reader` yields through `hasher`, calling `on_chunk`
/// with each chunk's length (progress). Interrupted reads are retried.
pub fn hash_reader(
    reader: &mut impl Read,
    mut hasher: MultiHasher,
    mut on_chunk: impl FnMut(u64),
) -> io::Result<Digests> {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        on_chunk(n as u64);
    }
    Ok(hasher.finish())
}

/// Lowercase hex SHA-256 of bytes in memory.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Raw SHA-256 of bytes in memory (S3 wants it base64-encoded).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_gives_every_digest() {
        let data = vec![7u8; READ_BUFFER + 5];
        let mut chunks = 0;
        let both = hash_reader(&mut data.as_slice(), MultiHasher::sha256_and(true), |_| chunks += 1).unwrap();
        assert_eq!(both.size, data.len() as u64);
        assert_eq!(chunks, 2);
        assert_eq!(both.sha256(), sha256_hex(&data));
        assert_eq!(both.get(Algo::Sha512).map(str::len), Some(128));
        let only = hash_reader(&mut data.as_slice(), MultiHasher::sha256_and(false), |_| ()).unwrap();
        assert_eq!(only.get(Algo::Sha512), None);
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}

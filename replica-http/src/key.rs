//! The cluster key: the shared secret every request under `/cluster/` must present.
//!
//! Invariant: the key's bytes never reach a log, a `Debug` string or an error message.

use std::fmt;

use axum::http::HeaderValue;

/// Longest accepted key, in bytes. Far above any sensible secret (a 256-bit key in base64 is 44
/// bytes); the bound keeps a misconfigured key (a whole file pasted in) from becoming a header
/// every request carries.
pub const KEY_BYTES_MAX: usize = 1024;

/// The scheme in front of the key in the `Authorization` header (RFC 6750, `Bearer <token>`).
const BEARER: &[u8] = b"Bearer ";

/// The shared secret of a cluster.
///
/// Replicas and front ends of one cluster are started with the same key. Every request under
/// `/cluster/` carries it as `Authorization: Bearer <key>`; a server that does not see exactly its
/// own key answers 401 and does nothing.
///
/// **Why a bearer token and not an HMAC of the body:** the deployment is plain HTTP on a trusted
/// host or network segment, where the threat is a stray or misconfigured client (another cluster,
/// a port scanner, a curl typo), not an on-path attacker. A bearer token stops those, is checked
/// before the body is read (so an unauthenticated client cannot make the server buffer a 64 MiB
/// body), and costs nothing per byte. Over an untrusted network, put TLS in front: a bearer token
/// (like an HMAC without replay protection) is only as secret as the channel it crosses.
///
/// The key is compared in constant time (see [`ClusterKey::matches`]), and `Debug` prints
/// `ClusterKey(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey {
    secret: Box<[u8]>,
}

/// Why a string cannot be a cluster key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty: a cluster without a secret would accept anyone.
    #[error("the cluster key is empty")]
    Empty,
    /// The key is longer than [`KEY_BYTES_MAX`] bytes.
    #[error("the cluster key is {len_bytes} bytes long; at most {KEY_BYTES_MAX} are allowed")]
    TooLong {
        /// Length of the refused key.
        len_bytes: usize,
    },
    /// The key contains a byte that cannot be sent in an HTTP header (allowed: printable ASCII
    /// without space, `!` to `~`). The position is given, not the byte, so the error does not
    /// leak the secret.
    #[error("the cluster key has a character at byte {position} that is not printable ASCII (allowed: '!' to '~', no spaces)")]
    InvalidCharacter {
        /// Byte offset of the first refused character.
        position: usize,
    },
}

impl ClusterKey {
    /// Accept `key` as the cluster key: non-empty, at most [`KEY_BYTES_MAX`] bytes, printable
    /// ASCII without spaces (what an HTTP header carries unchanged).
    pub fn new(key: impl AsRef<str>) -> Result<ClusterKey, KeyError> {
        let bytes = key.as_ref().as_bytes();
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        if bytes.len() > KEY_BYTES_MAX {
            return Err(KeyError::TooLong {
                len_bytes: bytes.len(),
            });
        }
        if let Some(position) = bytes.iter().position(|b| !(b'!'..=b'~').contains(b)) {
            return Err(KeyError::InvalidCharacter { position });
        }
        Ok(ClusterKey {
            secret: bytes.into(),
        })
    }

    /// True when `presented` equals the key. Takes the same time for every `presented` of a
    /// given length, whatever its content, so response timing does not reveal how much of a
    /// guess was right. (The key's length is not hidden.)
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(&self.secret, presented)
    }

    /// True when an `Authorization` header value is `Bearer <this key>` (the scheme name is
    /// case-insensitive, as RFC 7235 says).
    pub fn authorizes(&self, header: Option<&HeaderValue>) -> bool {
        let Some(value) = header.map(HeaderValue::as_bytes) else {
            return false;
        };
        if value.len() < BEARER.len() || !value[..BEARER.len()].eq_ignore_ascii_case(BEARER) {
            return false;
        }
        self.matches(&value[BEARER.len()..])
    }

    /// The `Authorization` header value that carries this key, marked sensitive so HTTP
    /// libraries leave it out of their debug output.
    pub(crate) fn header_value(&self) -> HeaderValue {
        let mut bytes = Vec::with_capacity(BEARER.len() + self.secret.len());
        bytes.extend_from_slice(BEARER);
        bytes.extend_from_slice(&self.secret);
        // Every byte was checked to be printable ASCII in `new`, which `HeaderValue` accepts.
        let mut value =
            HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static(""));
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl std::str::FromStr for ClusterKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClusterKey::new(s)
    }
}

/// Equality whose running time depends only on the lengths of the inputs, never on where they
/// first differ. Every byte position is visited and differences are OR-ed together; the
/// `black_box` keeps the optimiser from turning the loop back into an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_keys_with_a_typed_error() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("has space", KeyError::InvalidCharacter { position: 3 }),
            ("tab\there", KeyError::InvalidCharacter { position: 3 }),
            ("new\nline", KeyError::InvalidCharacter { position: 3 }),
            ("café", KeyError::InvalidCharacter { position: 3 }),
        ];
        for (key, want) in cases {
            assert_eq!(
                ClusterKey::new(key).as_ref().err(),
                Some(want),
                "key {key:?}"
            );
        }
        let long = "k".repeat(KEY_BYTES_MAX + 1);
        assert_eq!(
            ClusterKey::new(&long).err(),
            Some(KeyError::TooLong {
                len_bytes: KEY_BYTES_MAX + 1
            })
        );
        assert!(ClusterKey::new("k".repeat(KEY_BYTES_MAX)).is_ok());
        assert!(ClusterKey::new("a-b_c.d~e+f/g=!#$%&'*^`|").is_ok());
    }

    #[test]
    fn debug_and_errors_do_not_print_the_key() {
        let key = ClusterKey::new("s3cr3t-value").unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert_eq!(shown, "ClusterKey(<redacted>)");
        let err = ClusterKey::new("s3cr3t value").unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            !format!("{:?}", key.header_value()).contains("s3cr3t"),
            "header marked sensitive"
        );
    }

    #[test]
    fn matches_exactly_the_key() {
        let key = ClusterKey::new("abcdef").unwrap();
        let cases: &[(&[u8], bool)] = &[
            (b"abcdef", true),
            (b"abcdeg", false),
            (b"bbcdef", false),
            (b"abcde", false),
            (b"abcdef\0", false),
            (b"abcdefabcdef", false),
            (b"", false),
        ];
        for (presented, want) in cases {
            assert_eq!(
                key.matches(presented),
                *want,
                "{:?}",
                String::from_utf8_lossy(presented)
            );
        }
    }

    #[test]
    fn authorizes_only_bearer_with_the_key() {
        let key = ClusterKey::new("abcdef").unwrap();
        let cases: &[(Option<&str>, bool)] = &[
            (Some("Bearer abcdef"), true),
            (Some("bearer abcdef"), true),
            (Some("BEARER abcdef"), true),
            (None, false),
            (Some(""), false),
            (Some("Bearer"), false),
            (Some("Bearer "), false),
            (Some("Bearer abcdeX"), false),
            (Some("Bearer  abcdef"), false),
            (Some("Basic abcdef"), false),
            (Some("abcdef"), false),
            (Some("Bearer abcdef "), false),
        ];
        for (header, want) in cases {
            let value = header.map(|h| HeaderValue::from_str(h).unwrap());
            assert_eq!(key.authorizes(value.as_ref()), *want, "{header:?}");
        }
        assert!(
            key.authorizes(Some(&key.header_value())),
            "our own header passes"
        );
    }
}

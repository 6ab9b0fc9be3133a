//! Limits on what a request may carry.
//!
//! Shared by the front end, which rejects bad input before anything reaches the log, and by the
//! state machine, which checks again: a command can reach the log from any client of the cluster,
//! not only from this crate's front end, and the state must stay valid whatever arrives.

/// Longest user or event name, in Unicode scalar values (`char`s), not bytes: the seed's limit
/// is about what a person types, and a byte limit would penalise non-Latin scripts.
pub const NAME_CHARS_MAX: usize = 256;

/// Largest request body the public API reads, in bytes. Every valid body is well under 2 KiB
/// (a name of 256 four-byte characters plus three numbers); the limit only keeps a client from
/// making the front end buffer megabytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// Most ticket objects `GET /users/{userid}` lists in `tickets`.
///
/// The seed's format lists one event object per ticket held, so a user holding all the tickets
/// of a `u32::MAX`-ticket event would otherwise make the server render hundreds of gigabytes.
/// The response's `holdings` field always carries the exact per-event counts.
pub const USER_TICKETS_LISTED_MAX: usize = 10_000;

/// What is wrong with `name` as a user or event name, if anything.
///
/// A name must contain a non-whitespace character, be at most [`NAME_CHARS_MAX`] characters
/// long, and contain no control characters (they break logs and terminals and are never part
/// of a legitimate name).
pub fn name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("must not be empty or blank".to_string());
    }
    let chars = name.chars().count();
    if chars > NAME_CHARS_MAX {
        return Some(format!(
            "is {chars} characters long, at most {NAME_CHARS_MAX} are allowed"
        ));
    }
    if name.chars().any(char::is_control) {
        return Some("must not contain control characters".to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table of names at and around every boundary.
    #[test]
    fn name_rules() {
        let long_ok = "é".repeat(NAME_CHARS_MAX);
        let too_long = "a".repeat(NAME_CHARS_MAX + 1);
        let cases: &[(&str, bool)] = &[
            ("alice", true),
            ("a", true),
            ("Zoë Šťastná 東京", true),
            (&long_ok, true),
            ("", false),
            ("   ", false),
            ("\t\n", false),
            (&too_long, false),
            ("bad\u{0}name", false),
            ("line\nbreak", false),
        ];
        for (name, ok) in cases {
            assert_eq!(name_problem(name).is_none(), *ok, "name {name:?}");
        }
    }
}

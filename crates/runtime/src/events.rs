//! Events as a person reads them in `kubectl describe`: one per distinct transition.
//!
//! kube's [`Recorder`] folds repeats into an event series keyed by type, `action`, `reason`,
//! reporter and the object — not by the note. Two different transitions with one reason (a
//! switchover from pg-3 to pg-1, then one from pg-1 to pg-2) would become one event counted
//! twice that still reads "from pg-3 to pg-1". [`publish`] makes the `action` carry a digest
//! of the note, so only true repeats (the same note) form a series.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};

/// The API server refuses an event note over 1 KiB.
const MAX_NOTE_BYTES: usize = 1024;

/// Publishes a `reason` event with `note` about `object`; a failure is logged, never fatal.
pub async fn publish<K>(recorder: &Recorder, object: &K, type_: EventType, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let note = truncate(note);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        action: action(reason, &note),
        note: Some(note),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::warn!(name = %object.name_any(), reason, %error, "cannot publish event");
    }
}

/// `<reason>-<digest of the note>`: the Recorder's aggregation key, distinct per note (the
/// API server allows 128 characters; reasons are short CamelCase words).
fn action(reason: &str, note: &str) -> String {
    format!("{reason}-{:08x}", tusk_api::names::fnv1a32(note.as_bytes()))
}

fn truncate(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_owned();
    }
    let mut end = MAX_NOTE_BYTES - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_notes_get_distinct_actions_and_repeats_the_same() {
        let a = action("Switchover", "switched over from pg-3 to pg-1");
        let b = action("Switchover", "switched over from pg-1 to pg-2");
        assert_ne!(a, b);
        assert_eq!(a, action("Switchover", "switched over from pg-3 to pg-1"));
        assert!(a.starts_with("Switchover-") && a.len() <= 128, "{a}");
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(700);
        let cut = truncate(&note);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short"), "short");
    }
}

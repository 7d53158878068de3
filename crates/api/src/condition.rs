//! Status conditions, following the Kubernetes API conventions.
//!
//! Every tusk status carries `conditions` (a list keyed by `type`) and `observedGeneration`.
//! `Ready` is the condition other controllers chain on: a PostgresUser waits for its Cluster's
//! `Ready`, a ServiceBinding for its PostgresUser's. A condition only counts when it was written
//! for the object's current generation, so a controller never acts on a verdict about an older
//! spec.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition types used across tusk resources.
pub mod types {
    /// The resource does what it was asked to do; the condition other controllers chain on.
    pub const READY: &str = "Ready";
    /// A change is being rolled out; the reason names the step.
    pub const PROGRESSING: &str = "Progressing";
    /// Fewer healthy instances than asked for (Cluster).
    pub const DEGRADED: &str = "Degraded";
    /// A one-shot operation finished (PGUpgrade, Backup): `True` on success, `False` on failure.
    pub const SUCCEEDED: &str = "Succeeded";
    /// WAL archiving to the backup repository is healthy (Cluster with a repository).
    pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";
}

/// The three values a condition's `status` can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// The string written to `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// What a controller wants a condition to say; [`set_condition`] turns it into a [`Condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: ConditionStatus,
    /// CamelCase, machine-readable; also a metric label, so from a fixed set.
    pub reason: &'static str,
    /// For a person: what is happening and, when something is wrong, what to change.
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: &'static str,
        status: impl Into<ConditionStatus>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: status.into(),
            reason,
            message: message.into(),
        }
    }

    /// A `Ready` condition.
    pub fn ready(
        status: impl Into<ConditionStatus>,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::new(types::READY, status, reason, message)
    }
}

/// Sets `desired` in `conditions`, replacing the condition of the same type.
///
/// `lastTransitionTime` moves to `now` only when the status changes (or the condition is new);
/// reason, message and `observedGeneration` are updated in place. Returns whether anything
/// changed, so a caller can skip a status write when nothing did.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let status = desired.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let unchanged = existing.status == status
                && existing.reason == desired.reason
                && existing.message == desired.message
                && existing.observed_generation == observed_generation;
            if unchanged {
                return false;
            }
            if existing.status != status {
                existing.last_transition_time = now;
                existing.status = status.to_owned();
            }
            existing.reason = desired.reason.to_owned();
            existing.message = desired.message;
            existing.observed_generation = observed_generation;
            true
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_owned(),
                status: status.to_owned(),
                reason: desired.reason.to_owned(),
                message: desired.message,
                observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// Removes the condition of `type_`; returns whether one was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is `True` and was written for `generation`.
///
/// A condition written for an older generation says nothing about the current spec. Pass
/// `None` as `generation` to accept any (for objects whose generation is unknown).
pub fn is_condition_true(conditions: &[Condition], type_: &str, generation: Option<i64>) -> bool {
    find_condition(conditions, type_).is_some_and(|c| {
        c.status == ConditionStatus::True.as_str()
            && match (generation, c.observed_generation) {
                (Some(want), Some(seen)) => seen >= want,
                (Some(_), None) => false,
                (None, _) => true,
            }
    })
}

/// Whether `Ready` is `True` for the current generation.
pub fn is_ready(conditions: &[Condition], generation: Option<i64>) -> bool {
    is_condition_true(conditions, types::READY, generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn new_condition_is_added_with_transition_time() {
        let mut conditions = Vec::new();
        let changed = set_condition(
            &mut conditions,
            DesiredCondition::ready(false, "ClusterNotReady", "waiting"),
            Some(1),
            at(10),
        );
        assert!(changed);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(1));
    }

    #[test]
    fn same_condition_again_changes_nothing() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            DesiredCondition::ready(true, "Bound", "ok"),
            Some(2),
            at(10),
        );
        let changed = set_condition(
            &mut conditions,
            DesiredCondition::ready(true, "Bound", "ok"),
            Some(2),
            at(99),
        );
        assert!(!changed);
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn message_change_keeps_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            DesiredCondition::ready(false, "Waiting", "a"),
            Some(1),
            at(10),
        );
        let changed = set_condition(
            &mut conditions,
            DesiredCondition::ready(false, "Waiting", "b"),
            Some(2),
            at(20),
        );
        assert!(changed);
        assert_eq!(conditions[0].message, "b");
        assert_eq!(conditions[0].observed_generation, Some(2));
        assert_eq!(conditions[0].last_transition_time, at(10));
    }

    #[test]
    fn status_change_moves_transition_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            DesiredCondition::ready(false, "Waiting", "a"),
            Some(1),
            at(10),
        );
        set_condition(
            &mut conditions,
            DesiredCondition::ready(true, "Bound", "ok"),
            Some(1),
            at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, at(20));
    }

    #[test]
    fn ready_for_an_older_generation_does_not_count() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            DesiredCondition::ready(true, "Ready", "ok"),
            Some(3),
            at(10),
        );
        assert!(is_ready(&conditions, Some(3)));
        assert!(!is_ready(&conditions, Some(4)));
        assert!(is_ready(&conditions, None));
    }

    #[test]
    fn other_types_are_left_alone() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            DesiredCondition::ready(true, "Ready", "ok"),
            Some(1),
            at(10),
        );
        set_condition(
            &mut conditions,
            DesiredCondition::new(types::PROGRESSING, false, "Idle", "nothing to do"),
            Some(1),
            at(11),
        );
        assert_eq!(conditions.len(), 2);
        assert!(remove_condition(&mut conditions, types::PROGRESSING));
        assert!(!remove_condition(&mut conditions, types::PROGRESSING));
        assert!(is_ready(&conditions, Some(1)));
    }
}

//! Volume sizes: growing the data (and WAL) volumes when the spec asks for more, and automatic
//! growth when the data volume fills up (`spec.storage.autoGrow`).
//!
//! ```text
//!  PVCs (requested, capacity) ─┐
//!  usage per instance (SQL) ───┼─► plan_storage ─► expansions: patch PVC spec.resources.requests
//!  spec.storage / walStorage ──┘                 ─► status.storage, condition StoragePressure
//!  StorageClass.allowVolumeExpansion ─► an expansion the class does not allow is reported, not sent
//! ```
//!
//! StatefulSet `volumeClaimTemplates` are immutable, so a size change never touches the
//! StatefulSet (it keeps the size it was created with, see [`keep_claim_template_sizes`]); the
//! PVCs themselves are patched and the storage driver expands them online, without a restart.
//! Sizes only grow: a PVC already larger than the spec (grown automatically) stays as it is.
//!
//! # How usage is measured
//!
//! Kubernetes publishes a volume's filesystem usage only through the kubelet
//! (`/stats/summary`, or the `kubelet_volume_stats_*` metrics), which an operator can read
//! only with `nodes/proxy` — a grant that reaches every pod's exec on every node. tusk does
//! not ask for it. Instead it asks each instance's PostgreSQL, over the same TLS superuser
//! connection it uses for everything else, how many bytes its files take
//! ([`USAGE_QUERY`](crate::observe::instance_sql::USAGE_QUERY)): every database, the shared catalog, temporary files and (on the data
//! volume unless `walStorage` is set) the WAL. This is a lower bound of the filesystem's
//! usage: filesystem metadata and reserved blocks (typically 1–5 % of the volume), the
//! small bookkeeping directories (`pg_xact`, `pg_multixact`, `pg_logical`, ...) and anything
//! not written by PostgreSQL are not counted. The capacity is the PVC's
//! `status.capacity.storage`. Choose `thresholdPercent` with that margin in mind (the
//! default 80 leaves it).

use std::collections::{BTreeMap, BTreeSet};

use crate::observe::instance_sql::InstanceUsage;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tusk_api::Cluster;
use tusk_api::cluster::VolumeUsage;

/// The condition type tusk sets while a volume cannot get the space it needs.
pub const STORAGE_PRESSURE: &str = "StoragePressure";

/// Reasons of [`STORAGE_PRESSURE`].
pub mod reasons {
    /// Every volume is below the threshold (or was expanded).
    pub const WITHIN_THRESHOLD: &str = "WithinThreshold";
    /// A volume is being expanded.
    pub const EXPANDING: &str = "Expanding";
    /// A volume is past the threshold and already at `autoGrow.limit`.
    pub const LIMIT_REACHED: &str = "AutoGrowLimitReached";
    /// The StorageClass does not allow expansion (or is not readable).
    pub const EXPANSION_NOT_ALLOWED: &str = "ExpansionNotAllowed";
}

/// The data volume's claim template name (PVC `data-<instance>-0`).
pub const DATA_VOLUME: &str = "data";
/// The WAL volume's claim template name (PVC `wal-<instance>-0`).
pub const WAL_VOLUME: &str = "wal";

/// The PVC name the StatefulSet controller gives `volume` of `instance`: `<volume>-<sts>-0`.
pub fn claim_name(volume: &str, instance: &str) -> String {
    tusk_api::names::statefulset_claim(volume, instance)
}

/// One PVC as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedVolume {
    /// Instance name, `<cluster>-<n>`.
    pub instance: String,
    /// [`DATA_VOLUME`] or [`WAL_VOLUME`].
    pub volume: &'static str,
    /// The PVC's name.
    pub claim: String,
    /// `spec.resources.requests.storage`, in bytes.
    pub requested: Option<u64>,
    /// `status.capacity.storage`, in bytes (what the volume has now).
    pub capacity: Option<u64>,
    /// `status.capacity.storage` as written, for status.
    pub capacity_text: Option<String>,
    /// `spec.storageClassName`.
    pub storage_class: Option<String>,
    /// Bytes used, when the instance answered.
    pub used: Option<u64>,
}

impl ObservedVolume {
    /// Reads the PVC of `volume` for `instance`, with the usage measured on the instance.
    pub fn from_claim(
        instance: &str,
        volume: &'static str,
        claim: &PersistentVolumeClaim,
        usage: Option<InstanceUsage>,
        wal_on_own_volume: bool,
    ) -> Self {
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| parse_quantity(&q.0));
        let capacity_quantity = claim
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"));
        let used = usage.map(|usage| match (volume, wal_on_own_volume) {
            (WAL_VOLUME, _) => usage.wal,
            (_, true) => usage.data,
            (_, false) => usage.data + usage.wal,
        });
        Self {
            instance: instance.to_owned(),
            volume,
            claim: claim.metadata.name.clone().unwrap_or_default(),
            requested,
            capacity: capacity_quantity.and_then(|q| parse_quantity(&q.0)),
            capacity_text: capacity_quantity.map(|q| q.0.clone()),
            storage_class: claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone()),
            used,
        }
    }

    fn used_percent(&self) -> Option<u64> {
        let (used, capacity) = (self.used?, self.capacity?);
        (capacity > 0).then(|| used.saturating_mul(100).div_ceil(capacity))
    }
}

/// Why a PVC is expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpandReason {
    /// `spec.storage.size` (or `spec.walStorage.size`) was raised.
    SpecRaised,
    /// Usage passed `autoGrow.thresholdPercent`.
    AutoGrow { used_percent: u64 },
}

/// One PVC to expand.
#[derive(Clone, Debug, PartialEq)]
pub struct Expansion {
    pub instance: String,
    pub claim: String,
    pub storage_class: Option<String>,
    pub from: u64,
    pub to: Quantity,
    pub reason: ExpandReason,
}

impl Expansion {
    /// The event text.
    pub fn describe(&self) -> String {
        let why = match &self.reason {
            ExpandReason::SpecRaised => "spec size raised".to_owned(),
            ExpandReason::AutoGrow { used_percent } => {
                format!("{used_percent}% used, past the auto-grow threshold")
            }
        };
        format!(
            "expanding {} of {} from {} to {} ({why})",
            self.claim,
            self.instance,
            format_quantity(self.from).0,
            self.to.0
        )
    }
}

/// What the storage step decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoragePlan {
    /// PVCs to patch, once their StorageClass is known to allow it.
    pub expansions: Vec<Expansion>,
    /// Volumes past the threshold already at the limit: `(instance, claim, percent)`.
    pub at_limit: Vec<(String, String, u64)>,
    /// Usage per instance and volume, for status.
    pub usage: Vec<VolumeUsage>,
}

/// Plans the volume sizes of `cluster` from the observed PVCs and usage. Pure.
pub fn plan_storage(cluster: &Cluster, volumes: &[ObservedVolume]) -> StoragePlan {
    let spec = &cluster.spec;
    let data_size = parse_quantity(&spec.storage.size.0);
    let wal_size = spec
        .wal_storage
        .as_ref()
        .and_then(|w| parse_quantity(&w.size.0));
    let auto_grow = spec.storage.auto_grow.as_ref();
    let limit = auto_grow.and_then(|a| parse_quantity(&a.limit.0));
    let mut plan = StoragePlan::default();
    for volume in volumes {
        if let (Some(used), Some(percent)) = (volume.used, volume.used_percent()) {
            plan.usage.push(VolumeUsage {
                instance: volume.instance.clone(),
                volume: volume.volume.to_owned(),
                capacity: volume.capacity_text.clone().unwrap_or_default(),
                used_bytes: i64::try_from(used).unwrap_or(i64::MAX),
                used_percent: i32::try_from(percent.min(100)).unwrap_or(100),
            });
        }
        // Not bound or not created yet: the StatefulSet gives it the template's size.
        let Some(requested) = volume.requested else {
            continue;
        };
        let spec_size = match volume.volume {
            WAL_VOLUME => wal_size,
            _ => data_size,
        };
        let mut target = spec_size.unwrap_or(0);
        let mut reason = ExpandReason::SpecRaised;
        if let (DATA_VOLUME, Some(auto_grow), Some(limit), Some(percent), Some(capacity)) = (
            volume.volume,
            auto_grow,
            limit,
            volume.used_percent(),
            volume.capacity,
        ) && percent >= u64::try_from(auto_grow.threshold_percent).unwrap_or(80)
        {
            let resizing = capacity < requested;
            if capacity >= limit {
                plan.at_limit
                    .push((volume.instance.clone(), volume.claim.clone(), percent));
            } else if !resizing {
                let increase = u64::try_from(auto_grow.increase_percent).unwrap_or(25);
                let grown = grown_size(capacity, increase).min(limit);
                if grown > target {
                    target = grown;
                    reason = ExpandReason::AutoGrow {
                        used_percent: percent,
                    };
                }
            }
        }
        if target > requested {
            let to = if Some(target) == limit && reason != ExpandReason::SpecRaised {
                auto_grow.map_or_else(|| format_quantity(target), |a| a.limit.clone())
            } else if Some(target) == spec_size {
                match volume.volume {
                    WAL_VOLUME => spec
                        .wal_storage
                        .as_ref()
                        .map_or_else(|| format_quantity(target), |w| w.size.clone()),
                    _ => spec.storage.size.clone(),
                }
            } else {
                format_quantity(target)
            };
            plan.expansions.push(Expansion {
                instance: volume.instance.clone(),
                claim: volume.claim.clone(),
                storage_class: volume.storage_class.clone(),
                from: requested,
                to,
                reason,
            });
        }
    }
    plan
}

/// The StorageClasses whose `allowVolumeExpansion` decides whether `plan` can go ahead.
pub fn classes_to_check(plan: &StoragePlan) -> BTreeSet<String> {
    plan.expansions
        .iter()
        .filter_map(|e| e.storage_class.clone())
        .collect()
}

/// Whether an expansion may be sent: its StorageClass was read and allows expansion.
pub fn expansion_allowed(expansion: &Expansion, classes: &BTreeMap<String, bool>) -> bool {
    expansion
        .storage_class
        .as_ref()
        .and_then(|class| classes.get(class))
        .copied()
        .unwrap_or(false)
}

/// The [`STORAGE_PRESSURE`] condition: `(status, reason, message)`, or `None` when there is
/// nothing to say (no auto-grow and no blocked expansion).
pub fn pressure_condition(
    cluster: &Cluster,
    plan: &StoragePlan,
    classes: &BTreeMap<String, bool>,
) -> Option<(bool, &'static str, String)> {
    let blocked: Vec<&Expansion> = plan
        .expansions
        .iter()
        .filter(|e| !expansion_allowed(e, classes))
        .collect();
    if let Some(first) = blocked.first() {
        let class = first
            .storage_class
            .as_deref()
            .map_or_else(|| "(none)".to_owned(), |c| format!("{c:?}"));
        return Some((
            true,
            reasons::EXPANSION_NOT_ALLOWED,
            format!(
                "{} needs {} but its StorageClass {class} does not allow volume expansion (allowVolumeExpansion); use a StorageClass that does, or free space",
                first.claim, first.to.0
            ),
        ));
    }
    if let Some((instance, claim, percent)) = plan.at_limit.first() {
        let limit = cluster
            .spec
            .storage
            .auto_grow
            .as_ref()
            .map(|a| a.limit.0.clone())
            .unwrap_or_default();
        return Some((
            true,
            reasons::LIMIT_REACHED,
            format!(
                "{claim} of {instance} is {percent}% used and already at spec.storage.autoGrow.limit ({limit}): raise the limit or free space"
            ),
        ));
    }
    if let Some(first) = plan.expansions.first() {
        return Some((false, reasons::EXPANDING, first.describe()));
    }
    cluster.spec.storage.auto_grow.as_ref().map(|auto_grow| {
        (
            false,
            reasons::WITHIN_THRESHOLD,
            format!(
                "every measured data volume is below {}% used",
                auto_grow.threshold_percent
            ),
        )
    })
}

/// `status.storage`: this pass's measurements merged over the previous ones. An entry whose
/// percentage and capacity did not change keeps its previous byte count, so the status (and
/// the API) is written when the picture changes, not on every pass of a busy database.
/// Entries of instances not measured this pass are kept while the instance exists.
pub fn merge_usage(
    previous: &[VolumeUsage],
    measured: &[VolumeUsage],
    instances: &BTreeSet<String>,
) -> Vec<VolumeUsage> {
    let key = |u: &VolumeUsage| (u.instance.clone(), u.volume.clone());
    let mut merged: BTreeMap<(String, String), VolumeUsage> = previous
        .iter()
        .filter(|u| instances.contains(&u.instance))
        .map(|u| (key(u), u.clone()))
        .collect();
    for usage in measured {
        let same = merged.get(&key(usage)).is_some_and(|old| {
            old.used_percent == usage.used_percent && old.capacity == usage.capacity
        });
        if !same {
            merged.insert(key(usage), usage.clone());
        }
    }
    merged.into_values().collect()
}

/// Writes the storage part of `status`: usage per volume and the [`STORAGE_PRESSURE`]
/// condition (left as it was when nothing was measured or decided this pass).
pub fn update_status(
    status: &mut tusk_api::ClusterStatus,
    cluster: &Cluster,
    plan: &StoragePlan,
    classes: &BTreeMap<String, bool>,
    instances: &BTreeSet<String>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    status.storage = merge_usage(&status.storage, &plan.usage, instances);
    let decided =
        !plan.usage.is_empty() || !plan.expansions.is_empty() || !plan.at_limit.is_empty();
    match pressure_condition(cluster, plan, classes) {
        Some((value, reason, message)) if decided => {
            tusk_api::condition::set_condition(
                &mut status.conditions,
                tusk_api::condition::DesiredCondition::new(
                    STORAGE_PRESSURE,
                    value,
                    reason,
                    message,
                ),
                cluster.metadata.generation,
                now,
            );
        }
        Some(_) => {}
        None => status.conditions.retain(|c| c.type_ != STORAGE_PRESSURE),
    }
}

/// Keeps each claim template of `desired` at the size the observed StatefulSet has:
/// `volumeClaimTemplates` cannot change after creation, and sizes are changed on the PVCs.
pub fn keep_claim_template_sizes(desired: &mut StatefulSet, observed: Option<&StatefulSet>) {
    let Some(observed_templates) = observed
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.as_ref())
    else {
        return;
    };
    let Some(templates) = desired
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
    else {
        return;
    };
    for template in templates {
        let existing = observed_templates
            .iter()
            .find(|t| t.metadata.name == template.metadata.name)
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        if let (Some(existing), Some(requests)) = (
            existing,
            template
                .spec
                .as_mut()
                .and_then(|s| s.resources.as_mut())
                .and_then(|r| r.requests.as_mut()),
        ) {
            requests.insert("storage".to_owned(), existing.clone());
        }
    }
}

const KI: u64 = 1024;
const MI: u64 = KI * 1024;
const GI: u64 = MI * 1024;

/// `capacity` grown by `percent`, rounded up to a whole GiB (MiB below 1 GiB): volumes are
/// provisioned in such steps anyway.
pub fn grown_size(capacity: u64, percent: u64) -> u64 {
    let grown = capacity.saturating_add(capacity.saturating_mul(percent).div_ceil(100));
    let step = if grown >= GI { GI } else { MI };
    grown.div_ceil(step).saturating_mul(step)
}

/// Bytes as a quantity: whole GiB or MiB when exact, else bytes.
pub fn format_quantity(bytes: u64) -> Quantity {
    Quantity(if bytes >= GI && bytes.is_multiple_of(GI) {
        format!("{}Gi", bytes / GI)
    } else if bytes >= MI && bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else {
        bytes.to_string()
    })
}

/// A Kubernetes quantity in bytes (rounded up): `10Gi`, `1.5G`, `500M`, `1e9`, `1024`.
/// `None` for anything else (negative, milli-bytes of a volume, garbage).
pub fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        exponent if exponent.starts_with(['e', 'E']) => {
            10_u128.checked_pow(exponent[1..].parse::<u32>().ok()?)?
        }
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10_u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
    let fraction: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    let bytes = whole
        .checked_mul(multiplier)?
        .checked_add(fraction.checked_mul(multiplier)?.div_ceil(scale))?;
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(storage: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db}}\nspec:\n  postgresVersion: 17\n  instances: 2\n  storage: {storage}\n"
        ))
        .unwrap()
    }

    fn volume(
        instance: &str,
        requested: &str,
        capacity: &str,
        used: Option<u64>,
    ) -> ObservedVolume {
        ObservedVolume {
            instance: instance.to_owned(),
            volume: DATA_VOLUME,
            claim: claim_name(DATA_VOLUME, instance),
            requested: parse_quantity(requested),
            capacity: parse_quantity(capacity),
            capacity_text: Some(capacity.to_owned()),
            storage_class: Some("standard".to_owned()),
            used,
        }
    }

    const AUTO: &str =
        "{size: 10Gi, autoGrow: {thresholdPercent: 80, increasePercent: 25, limit: 20Gi}}";

    #[test]
    fn quantities_parse_in_bytes() {
        assert_eq!(parse_quantity("10Gi"), Some(10 * GI));
        assert_eq!(parse_quantity("1.5Gi"), Some(3 * GI / 2));
        assert_eq!(parse_quantity("500M"), Some(500_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("2048"), Some(2048));
        assert_eq!(parse_quantity("0.5Ki"), Some(512));
        for bad in ["", "Gi", "-1Gi", "10 Gi", "10gb", "1.2.3Gi", "100m"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
        assert_eq!(format_quantity(13 * GI).0, "13Gi");
        assert_eq!(format_quantity(1536 * MI).0, "1536Mi");
        assert_eq!(format_quantity(1000).0, "1000");
    }

    #[test]
    fn below_the_threshold_nothing_grows_and_usage_is_reported() {
        let c = cluster(AUTO);
        let plan = plan_storage(&c, &[volume("db-1", "10Gi", "10Gi", Some(7 * GI))]);
        assert!(plan.expansions.is_empty());
        assert_eq!(plan.usage.len(), 1);
        assert_eq!(plan.usage[0].used_percent, 70);
        assert_eq!(plan.usage[0].capacity, "10Gi");
        let (status, reason, _) = pressure_condition(&c, &plan, &BTreeMap::new()).unwrap();
        assert!(!status);
        assert_eq!(reason, reasons::WITHIN_THRESHOLD);
    }

    #[test]
    fn past_the_threshold_grows_by_the_increase_rounded_to_whole_gib() {
        let c = cluster(AUTO);
        let plan = plan_storage(&c, &[volume("db-1", "10Gi", "10Gi", Some(8 * GI))]);
        assert_eq!(plan.expansions.len(), 1);
        let expansion = &plan.expansions[0];
        assert_eq!(expansion.claim, "data-db-1-0");
        assert_eq!(expansion.to.0, "13Gi", "10Gi + 25% = 12.5Gi, rounded up");
        assert_eq!(
            expansion.reason,
            ExpandReason::AutoGrow { used_percent: 80 }
        );
    }

    #[test]
    fn growth_is_capped_at_the_limit_and_stops_there() {
        let c = cluster(AUTO);
        let plan = plan_storage(&c, &[volume("db-1", "18Gi", "18Gi", Some(17 * GI))]);
        assert_eq!(plan.expansions[0].to.0, "20Gi");
        let plan = plan_storage(&c, &[volume("db-1", "20Gi", "20Gi", Some(19 * GI))]);
        assert!(plan.expansions.is_empty());
        assert_eq!(plan.at_limit.len(), 1);
        let (status, reason, message) = pressure_condition(&c, &plan, &BTreeMap::new()).unwrap();
        assert!(status);
        assert_eq!(reason, reasons::LIMIT_REACHED);
        assert!(message.contains("20Gi"), "{message}");
    }

    #[test]
    fn no_second_growth_while_a_resize_is_in_flight() {
        let c = cluster(AUTO);
        let plan = plan_storage(&c, &[volume("db-1", "13Gi", "10Gi", Some(9 * GI))]);
        assert!(plan.expansions.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_raised_spec_size_expands_every_pvc_and_never_shrinks_a_grown_one() {
        let c = cluster("{size: 12Gi}");
        let plan = plan_storage(
            &c,
            &[
                volume("db-1", "10Gi", "10Gi", None),
                volume("db-2", "15Gi", "15Gi", None),
            ],
        );
        assert_eq!(plan.expansions.len(), 1);
        assert_eq!(plan.expansions[0].instance, "db-1");
        assert_eq!(plan.expansions[0].to.0, "12Gi");
        assert_eq!(plan.expansions[0].reason, ExpandReason::SpecRaised);
        assert!(
            pressure_condition(&c, &StoragePlan::default(), &BTreeMap::new()).is_none(),
            "no auto-grow, nothing blocked: no condition"
        );
    }

    #[test]
    fn a_class_without_expansion_is_reported_not_patched() {
        let c = cluster("{size: 12Gi}");
        let plan = plan_storage(&c, &[volume("db-1", "10Gi", "10Gi", None)]);
        let classes = BTreeMap::from([("standard".to_owned(), false)]);
        assert!(!expansion_allowed(&plan.expansions[0], &classes));
        let (status, reason, message) = pressure_condition(&c, &plan, &classes).unwrap();
        assert!(status);
        assert_eq!(reason, reasons::EXPANSION_NOT_ALLOWED);
        assert!(message.contains("allowVolumeExpansion"), "{message}");
        let allowed = BTreeMap::from([("standard".to_owned(), true)]);
        assert!(expansion_allowed(&plan.expansions[0], &allowed));
        assert_eq!(
            pressure_condition(&c, &plan, &allowed).unwrap().1,
            reasons::EXPANDING
        );
    }

    #[test]
    fn wal_counts_on_the_data_volume_unless_it_has_its_own() {
        let claim: PersistentVolumeClaim = serde_yaml_ng::from_str(
            "metadata: {name: data-db-1-0}\nspec: {resources: {requests: {storage: 10Gi}}, storageClassName: fast}\nstatus: {capacity: {storage: 10Gi}}\n",
        )
        .unwrap();
        let usage = InstanceUsage {
            data: 3 * GI,
            wal: GI,
        };
        let shared = ObservedVolume::from_claim("db-1", DATA_VOLUME, &claim, Some(usage), false);
        assert_eq!(shared.used, Some(4 * GI));
        assert_eq!(shared.requested, Some(10 * GI));
        assert_eq!(shared.storage_class.as_deref(), Some("fast"));
        let own = ObservedVolume::from_claim("db-1", DATA_VOLUME, &claim, Some(usage), true);
        assert_eq!(own.used, Some(3 * GI));
        let wal = ObservedVolume::from_claim("db-1", WAL_VOLUME, &claim, Some(usage), true);
        assert_eq!(wal.used, Some(GI));
    }

    #[test]
    fn claim_templates_keep_the_size_the_statefulset_was_created_with() {
        let template = |size: &str| -> StatefulSet {
            serde_yaml_ng::from_str(&format!(
                "metadata: {{name: db-1}}\nspec:\n  selector: {{}}\n  serviceName: db-pods\n  template: {{}}\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{resources: {{requests: {{storage: {size}}}}}}}\n"
            ))
            .unwrap()
        };
        let mut desired = template("20Gi");
        keep_claim_template_sizes(&mut desired, Some(&template("10Gi")));
        assert_eq!(desired, template("10Gi"));
        let mut new = template("20Gi");
        keep_claim_template_sizes(&mut new, None);
        assert_eq!(new, template("20Gi"));
    }
}

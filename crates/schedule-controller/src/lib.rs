//! BackupSchedule controller: Backups on a cron schedule with time zones, without stacking, with history limits.

#![forbid(unsafe_code)]

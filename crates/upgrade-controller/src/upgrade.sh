# tusk PGUpgrade: initialise the new data directory, then pg_upgrade --check or pg_upgrade.
#
# Rendered by crates/upgrade-controller (jobs.rs) into the check and upgrade Jobs, which mount
# the primary's data volume at /pgdata (and the WAL volume at /pgwal) while the Cluster is shut
# down. Everything it needs comes from the environment:
#
#   TUSK_STEP            prepare | check | upgrade | restore
#   TUSK_OLD_MAJOR       TUSK_NEW_MAJOR         e.g. 17 and 18
#   TUSK_OLD_BINDIR      TUSK_NEW_BINDIR        the two binary sets
#   TUSK_OLD_DATADIR     TUSK_NEW_DATADIR       /pgdata/pg<old>, /pgdata/pg<new>
#   TUSK_NEW_WALDIR      empty, or /pgwal/pg<new>_wal with a separate WAL volume
#   TUSK_TRANSFER        --link | --copy | --clone
#   TUSK_INITDB_ENCODING TUSK_INITDB_LOCALE     what the Cluster was initialised with
#   TUSK_WORK_DIR        a writable scratch directory (pg_upgrade's sockets, logs, scripts)
#   TUSK_TERMINATION_LOG where the one-line result for the controller goes
#   PGUSER PGPASSWORD    the superuser pg_upgrade connects as
#
# The result line is `system-identifier=<id>` after an upgrade; on failure it is the end of
# pg_upgrade's output. A failed check or upgrade leaves the old data directory startable: the
# new data directory is removed and, in link mode, global/pg_control.old is renamed back.
set -eu

say() { printf 'tusk-upgrade: %s\n' "$*"; }

# The controller reads the pod's termination message, which Kubernetes caps at 4096 bytes.
finish() {
  printf '%s\n' "$1" | tail -c 3800 > "$TUSK_TERMINATION_LOG" 2>/dev/null || true
}

die() {
  say "$1"
  finish "$1"
  exit 1
}

old_bin=$TUSK_OLD_BINDIR
new_bin=$TUSK_NEW_BINDIR
old_data=$TUSK_OLD_DATADIR
new_data=$TUSK_NEW_DATADIR
new_wal=${TUSK_NEW_WALDIR:-}
work=$TUSK_WORK_DIR
# Marks a new data directory this script initialised and checked; kept beside it, not in it.
prepared="$new_data.tusk-prepared"

for program in postgres pg_ctl pg_controldata; do
  [ -x "$old_bin/$program" ] || die "the image has no $old_bin/$program: the upgrade image must hold the binaries of PostgreSQL $TUSK_OLD_MAJOR and $TUSK_NEW_MAJOR (set spec.image)"
done
for program in postgres pg_ctl pg_controldata pg_resetwal initdb pg_upgrade pg_dump pg_dumpall; do
  [ -x "$new_bin/$program" ] || die "the image has no $new_bin/$program: the upgrade image must hold the binaries of PostgreSQL $TUSK_OLD_MAJOR and $TUSK_NEW_MAJOR (set spec.image)"
done
[ -f "$old_data/PG_VERSION" ] || die "no PostgreSQL data directory at $old_data: the volume does not hold a PostgreSQL $TUSK_OLD_MAJOR primary"
old_version=$(cat "$old_data/PG_VERSION")
[ "$old_version" = "$TUSK_OLD_MAJOR" ] || die "$old_data holds PostgreSQL $old_version, not $TUSK_OLD_MAJOR"

mkdir -p "$work"
cd "$work"

# The old cluster's state and page checksum setting, from its control file.
read_control() {
  control=$(LC_ALL=C "$old_bin/pg_controldata" "$old_data") || die "pg_controldata cannot read $old_data"
  state=$(printf '%s\n' "$control" | sed -n 's/^Database cluster state: *//p')
  checksums=$(printf '%s\n' "$control" | sed -n 's/^Data page checksum version: *//p')
}

# The new data directory, initialised like the old one: same encoding and locale (the
# Cluster's bootstrap settings; pg_upgrade --check refuses a mismatch), same page checksums
# (from pg_controldata), WAL on the WAL volume when there is one. Reused when an earlier step
# prepared it, so a Job can run initdb before the downtime starts.
prepare_new() {
  if [ -f "$prepared" ] && [ -f "$new_data/PG_VERSION" ]; then
    say "reusing $new_data, initialised earlier"
    return 0
  fi
  remove_new
  set -- --pgdata="$new_data" --username="$PGUSER" \
    --encoding="$TUSK_INITDB_ENCODING" --locale="$TUSK_INITDB_LOCALE" \
    --auth-local=trust --auth-host=scram-sha-256
  if [ "${checksums:-0}" != 0 ]; then
    set -- "$@" --data-checksums
  elif [ "$TUSK_NEW_MAJOR" -ge 18 ]; then
    set -- "$@" --no-data-checksums
  fi
  if [ -n "$new_wal" ]; then
    set -- "$@" --waldir="$new_wal"
  fi
  say "initdb $new_data (encoding $TUSK_INITDB_ENCODING, locale $TUSK_INITDB_LOCALE, checksums version ${checksums:-0})"
  if ! "$new_bin/initdb" "$@" > "$work/initdb.log" 2>&1; then
    cat "$work/initdb.log"
    die "initdb of PostgreSQL $TUSK_NEW_MAJOR failed: $(tail -n 15 "$work/initdb.log")"
  fi
  : > "$prepared"
}

remove_new() {
  if [ -e "$new_data" ]; then
    say "removing $new_data"
    rm -rf "$new_data"
  fi
  if [ -n "$new_wal" ] && [ -e "$new_wal" ]; then
    rm -rf "$new_wal"
  fi
  rm -f "$prepared"
}

# Put the old data directory back as it was: in link mode pg_upgrade renames
# global/pg_control to pg_control.old before it links the files; until the new server has
# started, renaming it back makes the old cluster startable again.
restore_old() {
  if [ ! -f "$old_data/global/pg_control" ] && [ -f "$old_data/global/pg_control.old" ]; then
    say "renaming $old_data/global/pg_control.old back"
    mv "$old_data/global/pg_control.old" "$old_data/global/pg_control"
  fi
  remove_new
}

run_pg_upgrade() {
  # Parallel dumps, restores and links (one per database or tablespace), at most 4.
  jobs=$(nproc 2>/dev/null || echo 1)
  if [ "$jobs" -gt 4 ]; then jobs=4; fi
  set -- --jobs="$jobs" "$@"
  # One syncfs(2) of the volume instead of an fsync per file (pg_upgrade 17 and later): in
  # link mode the data files are already durable, only the new catalog needs syncing.
  if [ "$TUSK_NEW_MAJOR" -ge 17 ]; then
    set -- --sync-method=syncfs "$@"
  fi
  # The old server's configuration is Patroni's: TLS files and pgBackRest are not in this
  # pod, so pg_upgrade's short-lived servers run without them.
  "$new_bin/pg_upgrade" \
    --old-bindir="$old_bin" --new-bindir="$new_bin" \
    --old-datadir="$old_data" --new-datadir="$new_data" \
    --username="$PGUSER" --socketdir="$work" \
    --old-options="-c ssl=off -c archive_mode=off" \
    --new-options="-c ssl=off" \
    "$@" > "$work/pg_upgrade.out" 2>&1
}

# The end of pg_upgrade's output plus the problem lists it writes beside its logs.
upgrade_output() {
  tail -n 40 "$work/pg_upgrade.out"
  for file in "$new_data"/pg_upgrade_output.d/*/*.txt "$work"/*.txt; do
    [ -f "$file" ] || continue
    printf '%s:\n' "${file##*/}"
    head -n 20 "$file"
  done
}

# pg_upgrade needs a primary that stopped cleanly. A replica's volume says "shut down in
# recovery": the instance recorded as primary was not the last one running.
require_clean_primary() {
  case "$state" in
  "shut down") ;;
  "shut down in recovery")
    die "$old_data holds a replica (pg_controldata: \"$state\"), not the primary: a failover happened while the Cluster stopped; nothing was changed, create a new PGUpgrade"
    ;;
  *)
    die "the old server was not shut down cleanly (pg_controldata: \"$state\"); nothing was changed: start the Cluster, let it stop again, and create a new PGUpgrade"
    ;;
  esac
}

case "$TUSK_STEP" in
restore)
  # After an upgrade Job that did not finish (killed, out of memory): its own clean-up did
  # not run. The lock has kept every instance down, so the new server never started.
  restore_old
  finish "restored $old_data"
  ;;
prepare)
  read_control
  prepare_new
  finish "prepared $new_data"
  ;;
check)
  read_control
  require_clean_primary
  prepare_new
  say "pg_upgrade --check from $TUSK_OLD_MAJOR to $TUSK_NEW_MAJOR $TUSK_TRANSFER"
  if ! run_pg_upgrade --check "$TUSK_TRANSFER"; then
    cat "$work/pg_upgrade.out"
    output=$(upgrade_output)
    remove_new
    die "pg_upgrade --check failed:
$output"
  fi
  cat "$work/pg_upgrade.out"
  finish "pg_upgrade --check passed"
  ;;
upgrade)
  read_control
  require_clean_primary
  prepare_new
  say "pg_upgrade from $TUSK_OLD_MAJOR to $TUSK_NEW_MAJOR $TUSK_TRANSFER"
  if ! run_pg_upgrade "$TUSK_TRANSFER"; then
    cat "$work/pg_upgrade.out"
    output=$(upgrade_output)
    restore_old
    die "pg_upgrade failed; the old data directory is unchanged:
$output"
  fi
  cat "$work/pg_upgrade.out"
  rm -f "$prepared"
  sysid=$(LC_ALL=C "$new_bin/pg_controldata" "$new_data" | sed -n 's/^Database system identifier: *//p')
  [ -n "$sysid" ] || die "pg_controldata cannot read the new data directory $new_data"
  say "upgraded; new system identifier $sysid"
  finish "system-identifier=$sysid"
  ;;
*)
  die "unknown TUSK_STEP '$TUSK_STEP' (prepare, check, upgrade or restore)"
  ;;
esac

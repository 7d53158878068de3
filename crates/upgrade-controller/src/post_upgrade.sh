# tusk PGUpgrade: post-upgrade tasks on the new primary, once it accepts writes.
#
# Rendered by crates/upgrade-controller (jobs.rs) into the post-upgrade Job, which reaches the
# primary through the Cluster's read-write Service over TLS (PGHOST, PGPORT, PGSSLMODE,
# PGSSLROOTCERT, PGUSER, PGPASSWORD come from the environment).
#
#   TUSK_NEW_MAJOR  the major just upgraded to
#
# 1. Planner statistics: pg_upgrade does not carry them before PostgreSQL 18, so every
#    database is analyzed in stages (a rough pass first, so plans recover within seconds);
#    from 18 on only what is missing.
# 2. Extensions: pg_upgrade keeps each extension's old version; ALTER EXTENSION ... UPDATE
#    moves each to the default version the new binaries ship.
set -eu

say() { printf 'tusk-post-upgrade: %s\n' "$*"; }

if [ "$TUSK_NEW_MAJOR" -ge 18 ]; then
  say "vacuumdb --all --analyze-in-stages --missing-stats-only"
  vacuumdb --all --analyze-in-stages --missing-stats-only
else
  say "vacuumdb --all --analyze-in-stages"
  vacuumdb --all --analyze-in-stages
fi

psql -X -At -v ON_ERROR_STOP=1 -d postgres \
  -c "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname" |
  while IFS= read -r database; do
    # PGDATABASE is taken as a plain name (never parsed as a connection string).
    updates=$(PGDATABASE=$database psql -X -At -v ON_ERROR_STOP=1 \
      -c "SELECT format('ALTER EXTENSION %I UPDATE;', extname) FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname WHERE a.default_version IS DISTINCT FROM e.extversion")
    if [ -n "$updates" ]; then
      say "updating extensions in database $database"
      printf '%s\n' "$updates" | PGDATABASE=$database psql -X -v ON_ERROR_STOP=1
    fi
  done
say "done"

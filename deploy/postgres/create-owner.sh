#!/usr/bin/env bash
# Compose's PostgreSQL runs this once, when its volume is first initialised
# (/docker-entrypoint-initdb.d): the service's database gets an ordinary owner, TENANT_DB_USER
# with TENANT_DB_PASSWORD, which row-level security holds (deploy/postgres/owner.sql says how).
# The entrypoint may source this file instead of running it, so it sets no shell options.
psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="${TENANT_DB_USER:-tenant_owner}" -v password="${TENANT_DB_PASSWORD:-}" <<'SQL'
-- no column, so the password is not printed
select from (select set_config('tenant_setup.owner', :'owner', false), set_config('tenant_setup.password', :'password', false)) s;
\i /tenant-setup/owner.sql
SQL

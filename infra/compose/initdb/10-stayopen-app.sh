#!/bin/sh
# Runs once, when the postgres container initialises its data folder: the role the cloud serves as
# (the migrations would create it without LOGIN). Not a superuser, no BYPASSRLS: row-level
# security isolates the MSPs (docs/ARCHITECTURE.md, Tenancy).
set -eu
password="$(cat /run/secrets/app_password)"
psql -v ON_ERROR_STOP=1 -v password="$password" --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE stayopen_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD :'password';
SQL

-- Sample data worth backing up, used by the demo and the tests.
-- :'tblspc' is the directory of a second tablespace (owned by the server's user).
CREATE ROLE app_owner LOGIN;
CREATE ROLE reporter NOLOGIN;
CREATE TABLESPACE extra OWNER app_owner LOCATION :'tblspc';
CREATE DATABASE appdb OWNER app_owner;
\connect appdb
CREATE EXTENSION pg_trgm;
SET ROLE app_owner;
CREATE SCHEMA app;
CREATE TABLE app.accounts (id bigserial PRIMARY KEY, name text NOT NULL,
    balance numeric(12,2) NOT NULL, note text);
INSERT INTO app.accounts (name, balance, note)
     SELECT 'acct ' || g, (g % 10000) / 3.0, md5(g::text) || md5((g * 7)::text)
       FROM generate_series(1, 300000) g;
CREATE TABLE app.orders (id int PRIMARY KEY, account_id bigint REFERENCES app.accounts,
    placed date) TABLESPACE extra;
INSERT INTO app.orders SELECT g, g, date '2026-01-01' + (g % 300) FROM generate_series(1, 5000) g;
CREATE TABLE app.empty_table (x int);
CREATE SCHEMA "Mixed Case";
CREATE TABLE "Mixed Case"."Odd Table" (v text);
INSERT INTO "Mixed Case"."Odd Table" VALUES ('a'), ('b'), ('c');
CREATE SEQUENCE app.invoice_no;
SELECT setval('app.invoice_no', 42);
CREATE VIEW app.rich AS SELECT id, name FROM app.accounts WHERE balance > 3000;
CREATE INDEX accounts_name_trgm ON app.accounts USING gin (name gin_trgm_ops);
GRANT USAGE ON SCHEMA app TO reporter;
GRANT SELECT ON app.rich TO reporter;
RESET ROLE;
ANALYZE;

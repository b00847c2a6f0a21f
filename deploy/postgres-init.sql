-- Runs once, when the Postgres volume is first initialised (docker-entrypoint-initdb.d).
-- One server, one database per service (docs/design.md §2): no service reads another's.
-- The entrypoint runs this as POSTGRES_USER (mppo), who therefore owns every database.
CREATE DATABASE group_db;
CREATE DATABASE payment_db;
CREATE DATABASE order_db;
CREATE DATABASE notification_db;

-- Nobody but the owner may connect: a role added later for one service must be granted
-- CONNECT on its own database explicitly.
REVOKE ALL ON DATABASE group_db FROM PUBLIC;
REVOKE ALL ON DATABASE payment_db FROM PUBLIC;
REVOKE ALL ON DATABASE order_db FROM PUBLIC;
REVOKE ALL ON DATABASE notification_db FROM PUBLIC;

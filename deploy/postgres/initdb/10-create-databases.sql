-- Run once by the postgres image's entrypoint, on an empty data volume
-- (files in /docker-entrypoint-initdb.d). Each service owns one database and
-- creates its own tables in it at start (MIGRATIONS_DIR).
CREATE DATABASE orders;
CREATE DATABASE inventory;

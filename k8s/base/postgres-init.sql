-- Runs once, when the in-cluster PostgreSQL initialises an empty data directory.
-- POSTGRES_DB (mlflow) already exists; Dagster gets its own database on the same server.
CREATE DATABASE dagster;

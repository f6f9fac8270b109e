-- Prefect keeps its own state in a separate database of the same server.
CREATE DATABASE prefect;

-- perf/scenarios/register-auth: the subscriber the UAC registers as (user perf, password perfpass, realm
-- example.com), in a table both targets read: ringsip's auth_db and Kamailio's (which checks the table's
-- version row: 7 for subscriber).
CREATE TABLE IF NOT EXISTS ringsip_perf_subscriber (
    id INT AUTO_INCREMENT PRIMARY KEY, username CHAR(64) NOT NULL DEFAULT '', domain CHAR(64) NOT NULL DEFAULT '',
    password CHAR(64) NOT NULL DEFAULT '', ha1 CHAR(128) NOT NULL DEFAULT '', ha1b CHAR(128) NOT NULL DEFAULT '',
    UNIQUE KEY account_idx (username, domain));
DELETE FROM ringsip_perf_subscriber;
INSERT INTO ringsip_perf_subscriber (username, domain, password, ha1, ha1b)
    VALUES ('perf', 'example.com', 'perfpass', MD5('perf:example.com:perfpass'), MD5('perf@example.com:example.com:perfpass'));
CREATE TABLE IF NOT EXISTS version (table_name CHAR(32) NOT NULL PRIMARY KEY, table_version INT UNSIGNED NOT NULL DEFAULT 0);
REPLACE INTO version (table_name, table_version) VALUES ('ringsip_perf_subscriber', 7), ('location', 9);

-- perf/scenarios/acc and dialog-acc: the table both targets account to, in OpenSIPS 3.x's acc form (Kamailio's acc writes the
-- first eight columns, which it shares), emptied before each run.
CREATE TABLE IF NOT EXISTS ringsip_perf_acc (
    id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, method CHAR(16) NOT NULL DEFAULT '',
    from_tag CHAR(64) NOT NULL DEFAULT '', to_tag CHAR(64) NOT NULL DEFAULT '', callid CHAR(255) NOT NULL DEFAULT '',
    sip_code CHAR(3) NOT NULL DEFAULT '', sip_reason CHAR(128) NOT NULL DEFAULT '', time DATETIME NOT NULL,
    duration INT UNSIGNED NOT NULL DEFAULT 0, ms_duration INT UNSIGNED NOT NULL DEFAULT 0,
    setuptime INT UNSIGNED NOT NULL DEFAULT 0, created DATETIME DEFAULT NULL);
TRUNCATE TABLE ringsip_perf_acc;
CREATE TABLE IF NOT EXISTS version (table_name CHAR(32) NOT NULL PRIMARY KEY, table_version INT UNSIGNED NOT NULL DEFAULT 0);
REPLACE INTO version (table_name, table_version) VALUES ('ringsip_perf_acc', 5);

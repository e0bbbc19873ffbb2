-- A journal as blkledgerd wrote it at schema version 2 (migrations[0..1] in
-- daemon/journal.c): made by running the daemon of that version on two loop devices,
-- relabelling one and detaching the other, then `sqlite3 ledger.db .dump` plus the
-- PRAGMA user_version the dump leaves out. tests/test-journal.c migrates it and checks
-- that no row is lost or changed. Never edit it to follow a newer schema: add a
-- journal-vN.sql for the next version instead.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE devices (  id INTEGER PRIMARY KEY AUTOINCREMENT,  identity TEXT NOT NULL,  state TEXT NOT NULL CHECK (state IN ('present', 'gone')),  first_seen INTEGER NOT NULL,  last_seen INTEGER NOT NULL,  kname TEXT, devnode TEXT, dev TEXT, devtype TEXT,  size_bytes INTEGER, read_only INTEGER, removable INTEGER, rotational INTEGER,  logical_block_size INTEGER, physical_block_size INTEGER,  model TEXT, serial TEXT, wwn TEXT, diskseq INTEGER,  fs_type TEXT, fs_uuid TEXT, fs_label TEXT, fs_version TEXT, fs_usage TEXT,  pt_type TEXT, pt_uuid TEXT, part_number INTEGER, part_uuid TEXT, parent TEXT,  holders TEXT NOT NULL DEFAULT '[]',  loop_backing_file TEXT, id_path TEXT);
INSERT INTO devices VALUES(1,'loop:254:0:10952825','present',1795823551421432,1795823552455365,'loop0','/dev/loop0','7:0','disk',33554432,0,0,1,512,512,NULL,NULL,NULL,10930,'ext4','aa5e0c9d-45e2-48a9-8aab-a5e0bbefa86c','alpha2','1.0','filesystem',NULL,NULL,NULL,NULL,NULL,'[]','/tmp/v2gen/img/a.img',NULL);
INSERT INTO devices VALUES(2,'loop:254:0:10952826','gone',1795823551421432,1795823552455365,'loop1','/dev/loop1','7:1','disk',33554432,0,0,1,512,512,NULL,NULL,NULL,10931,'swap','8f56e350-7007-4086-8f96-23bd3fdcb7d1','beta','1','other',NULL,NULL,NULL,NULL,NULL,'[]','/tmp/v2gen/img/b.img',NULL);
CREATE TABLE events (  seq INTEGER PRIMARY KEY AUTOINCREMENT,  time INTEGER NOT NULL,  device_id INTEGER REFERENCES devices(id),  kind TEXT NOT NULL,  before TEXT,  after TEXT);
INSERT INTO events VALUES(1,1795823551254890,NULL,'daemon_started',NULL,'{"version":"0.1.0","pid":10407}');
INSERT INTO events VALUES(2,1795823551421432,1,'appeared',NULL,'{"identity":"loop:254:0:10952825","state":"present","kname":"loop0","devnode":"/dev/loop0","dev":"7:0","devtype":"disk","size_bytes":33554432,"read_only":false,"removable":false,"rotational":true,"logical_block_size":512,"physical_block_size":512,"model":null,"serial":null,"wwn":null,"diskseq":10930,"fs_type":"ext4","fs_uuid":"aa5e0c9d-45e2-48a9-8aab-a5e0bbefa86c","fs_label":"alpha","fs_version":"1.0","fs_usage":"filesystem","pt_type":null,"pt_uuid":null,"part_number":null,"part_uuid":null,"parent":null,"holders":[],"loop_backing_file":"/tmp/v2gen/img/a.img","id_path":null}');
INSERT INTO events VALUES(3,1795823551421432,2,'appeared',NULL,'{"identity":"loop:254:0:10952826","state":"present","kname":"loop1","devnode":"/dev/loop1","dev":"7:1","devtype":"disk","size_bytes":33554432,"read_only":false,"removable":false,"rotational":true,"logical_block_size":512,"physical_block_size":512,"model":null,"serial":null,"wwn":null,"diskseq":10931,"fs_type":"swap","fs_uuid":"8f56e350-7007-4086-8f96-23bd3fdcb7d1","fs_label":"beta","fs_version":"1","fs_usage":"other","pt_type":null,"pt_uuid":null,"part_number":null,"part_uuid":null,"parent":null,"holders":[],"loop_backing_file":"/tmp/v2gen/img/b.img","id_path":null}');
INSERT INTO events VALUES(4,1795823552455365,1,'changed','{"fs_label":"alpha"}','{"fs_label":"alpha2"}');
INSERT INTO events VALUES(5,1795823552460059,2,'disappeared','{"state":"present"}','{"state":"gone"}');
INSERT INTO events VALUES(6,1795823552962741,NULL,'daemon_stopped',NULL,NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES('last_full_scan','2026-11-27T23:52:32.456576Z');
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('events',6);
INSERT INTO sqlite_sequence VALUES('devices',2);
CREATE INDEX devices_identity ON devices(identity);
CREATE TRIGGER events_append_only BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE INDEX events_device ON events(device_id, seq);
PRAGMA user_version=2;
COMMIT;

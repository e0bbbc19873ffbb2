-- A journal as blkledgerd wrote it at schema version 1 (migrations[0] in daemon/journal.c),
-- made with `sqlite3 journal.db .dump` plus the PRAGMA user_version the dump leaves out.
-- tests/test-journal.c builds a database from it and checks that journal_open() migrates
-- it without losing or changing a row. Never edit it to follow a newer schema: add a
-- journal-vN.sql for the next version instead.
--
-- History: the daemon started, found two loop devices (loop0: ext4 image; loop1: a LUKS
-- container opened as dm-0), the label of loop0 changed, dm-0 was closed, loop1 was
-- detached, the daemon stopped cleanly.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE devices (  id INTEGER PRIMARY KEY AUTOINCREMENT,  identity TEXT NOT NULL,  state TEXT NOT NULL CHECK (state IN ('present', 'gone')),  first_seen INTEGER NOT NULL,  last_seen INTEGER NOT NULL,  kname TEXT, devnode TEXT, dev TEXT, devtype TEXT,  size_bytes INTEGER, read_only INTEGER, removable INTEGER, rotational INTEGER,  logical_block_size INTEGER, physical_block_size INTEGER,  model TEXT, serial TEXT, wwn TEXT, diskseq INTEGER,  fs_type TEXT, fs_uuid TEXT, fs_label TEXT, fs_version TEXT, fs_usage TEXT,  pt_type TEXT, pt_uuid TEXT, part_number INTEGER, part_uuid TEXT, parent TEXT,  holders TEXT NOT NULL DEFAULT '[]',  loop_backing_file TEXT, id_path TEXT);
INSERT INTO devices VALUES(1,'loop:259:2:1835011','present',1763629200456789,1763719990000000,'loop0','/dev/loop0','7:0','disk',67108864,0,0,0,512,512,NULL,NULL,NULL,12,'ext4','3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55','build','1.0','filesystem',NULL,NULL,NULL,NULL,NULL,'[]','/var/tmp/blkledger/scratch.img',NULL);
INSERT INTO devices VALUES(2,'loop:259:2:1835012','gone',1763629200456789,1763713800250000,'loop1','/dev/loop1','7:1','disk',33554432,0,0,0,512,512,NULL,NULL,NULL,13,'crypto_LUKS','b8e1f0d2-6a43-4f9c-8d21-0c5e7a9b3f14',NULL,'2','crypto',NULL,NULL,NULL,NULL,NULL,'[]','/var/tmp/blkledger/vault.img',NULL);
CREATE TABLE events (  seq INTEGER PRIMARY KEY AUTOINCREMENT,  time INTEGER NOT NULL,  device_id INTEGER REFERENCES devices(id),  kind TEXT NOT NULL,  before TEXT,  after TEXT);
INSERT INTO events VALUES(1,1763629200123456,NULL,'daemon_started',NULL,'{"version":"0.1.0","pid":812}');
INSERT INTO events VALUES(2,1763629200456789,1,'appeared',NULL,'{"identity":"loop:259:2:1835011","state":"present","kname":"loop0","devnode":"/dev/loop0","dev":"7:0","devtype":"disk","size_bytes":67108864,"read_only":false,"removable":false,"rotational":false,"logical_block_size":512,"physical_block_size":512,"model":null,"serial":null,"wwn":null,"diskseq":12,"fs_type":"ext4","fs_uuid":"3f1c2a7e-5b8d-4c61-9e0a-2d7f4b1c8e55","fs_label":"scratch","fs_version":"1.0","fs_usage":"filesystem","pt_type":null,"pt_uuid":null,"part_number":null,"part_uuid":null,"parent":null,"holders":[],"loop_backing_file":"/var/tmp/blkledger/scratch.img","id_path":null}');
INSERT INTO events VALUES(3,1763629200456789,2,'appeared',NULL,'{"identity":"loop:259:2:1835012","state":"present","kname":"loop1","devnode":"/dev/loop1","dev":"7:1","devtype":"disk","size_bytes":33554432,"read_only":false,"removable":false,"rotational":false,"logical_block_size":512,"physical_block_size":512,"model":null,"serial":null,"wwn":null,"diskseq":13,"fs_type":"crypto_LUKS","fs_uuid":"b8e1f0d2-6a43-4f9c-8d21-0c5e7a9b3f14","fs_label":null,"fs_version":"2","fs_usage":"crypto","pt_type":null,"pt_uuid":null,"part_number":null,"part_uuid":null,"parent":null,"holders":["dm-0"],"loop_backing_file":"/var/tmp/blkledger/vault.img","id_path":null}');
INSERT INTO events VALUES(4,1763647965000123,1,'changed','{"fs_label":"scratch"}','{"fs_label":"build"}');
INSERT INTO events VALUES(5,1763713800250000,2,'changed','{"holders":["dm-0"]}','{"holders":[]}');
INSERT INTO events VALUES(6,1763713805750000,2,'disappeared','{"state":"present"}','{"state":"gone"}');
INSERT INTO events VALUES(7,1763720000000001,NULL,'daemon_stopped',NULL,NULL);
DELETE FROM sqlite_sequence;
INSERT INTO sqlite_sequence VALUES('devices',2);
INSERT INTO sqlite_sequence VALUES('events',7);
CREATE INDEX devices_identity ON devices(identity);
CREATE TRIGGER events_append_only BEFORE UPDATE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
PRAGMA user_version=1;
COMMIT;

-- rackboot SQLite upgrade fixture, written by TestWriteFixture -update
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
INSERT INTO "schema_migrations" VALUES(1,1796118518);
INSERT INTO "schema_migrations" VALUES(2,1796118518);
INSERT INTO "schema_migrations" VALUES(3,1796118518);
CREATE TABLE nodes (
		id          TEXT PRIMARY KEY,
		name        TEXT NOT NULL DEFAULT '',
		arch        TEXT NOT NULL DEFAULT '',
		firmware    TEXT NOT NULL DEFAULT '',
		client_arch INTEGER NOT NULL DEFAULT 0,
		state       TEXT NOT NULL,
		secure_boot INTEGER,
		uuid        TEXT NOT NULL DEFAULT '',
		first_seen  INTEGER NOT NULL,
		last_seen   INTEGER NOT NULL
	, kind TEXT NOT NULL DEFAULT 'metal', rack TEXT NOT NULL DEFAULT '', position INTEGER NOT NULL DEFAULT 0, tags TEXT NOT NULL DEFAULT '[]', owner TEXT NOT NULL DEFAULT 'rackboot', inventory BLOB, gpu_models TEXT NOT NULL DEFAULT '[]', last_error TEXT NOT NULL DEFAULT '', state_changed INTEGER NOT NULL DEFAULT 0);
INSERT INTO "nodes" VALUES('cd7868c4-3335-4dc7-a6ff-c7473ef8cc19','gpu-01','x86_64','uefi',7,'available',1,'4c4c4544004b10318035b2c04f333732',1793613600123456789,1793613600123456789,'metal','r12',7,'["gpu","a100"]','rackboot',X'7B2276657273696F6E223A312C22637075223A7B2261726368223A227838365F3634222C226D6F64656C223A22414D4420455059432037373633222C22736F636B657473223A327D2C2267707573223A5B7B226D6F64656C223A224E564944494120413130302D53584D342D38304742222C226E756D615F6E6F6465223A317D5D7D','["NVIDIA A100-SXM4-80GB"]','',1793614260123456789);
INSERT INTO "nodes" VALUES('0e187a4f-c9bc-44fc-8b7f-edebae9e3265','arm-01','aarch64','uefi',11,'failed',NULL,'',1793613601123456789,1793613660123456789,'metal','r13',40,'["arm"]','ironic',X'7B2276657273696F6E223A312C22637075223A7B2261726368223A2261617263683634227D7D','[]','no disk found',1793614380123456789);
INSERT INTO "nodes" VALUES('0af3e858-3c3a-47a9-9fe1-333a453375b2','','x86_64','bios',0,'discovered',0,'',1793613602123456789,1793613602123456789,'metal','',0,'[]','rackboot',NULL,'[]','',1793613602123456789);
CREATE TABLE interfaces (
		mac     TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
	);
INSERT INTO "interfaces" VALUES('52:54:00:aa:00:01','cd7868c4-3335-4dc7-a6ff-c7473ef8cc19');
INSERT INTO "interfaces" VALUES('52:54:00:aa:00:02','0e187a4f-c9bc-44fc-8b7f-edebae9e3265');
INSERT INTO "interfaces" VALUES('52:54:00:aa:00:03','0af3e858-3c3a-47a9-9fe1-333a453375b2');
CREATE TABLE leases (
		ip       TEXT PRIMARY KEY,
		mac      TEXT NOT NULL,
		subnet   TEXT NOT NULL,
		state    TEXT NOT NULL,
		expires  INTEGER NOT NULL,
		hostname TEXT NOT NULL DEFAULT ''
	);
INSERT INTO "leases" VALUES('10.20.0.10','52:54:00:aa:00:01','10.20.0.0/24','bound',4102444800000000000,'gpu-01');
INSERT INTO "leases" VALUES('10.20.0.11','52:54:00:aa:00:03','10.20.0.0/24','offered',4102444800000000000,'');
INSERT INTO "leases" VALUES('10.21.0.20','52:54:00:aa:00:02','10.21.0.0/24','bound',4102444800000000000,'arm-01');
INSERT INTO "leases" VALUES('10.20.0.150','52:54:00:aa:00:04','10.20.0.0/24','offered',4102444800000000000,'');
INSERT INTO "leases" VALUES('10.20.0.99','','invalid Prefix','declined',4102444800000000000,'');
CREATE TABLE boot_events (
		seq         INTEGER PRIMARY KEY AUTOINCREMENT,
		node_id     TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		time        INTEGER NOT NULL,
		mac         TEXT NOT NULL,
		ip          TEXT NOT NULL,
		proto       TEXT NOT NULL,
		kind        TEXT NOT NULL,
		file        TEXT NOT NULL,
		bytes       INTEGER NOT NULL,
		size        INTEGER NOT NULL,
		block_size  INTEGER NOT NULL,
		window_size INTEGER NOT NULL,
		complete    INTEGER NOT NULL,
		error       TEXT NOT NULL,
		options     TEXT NOT NULL
	);
INSERT INTO "boot_events" VALUES(1,'cd7868c4-3335-4dc7-a6ff-c7473ef8cc19',1793613603123456789,'52:54:00:aa:00:01','','dhcp','discover','snponly.efi',0,-1,0,0,0,'','{"60":"PXEClient:Arch:00007:UNDI:003016","93":"7"}');
INSERT INTO "boot_events" VALUES(2,'cd7868c4-3335-4dc7-a6ff-c7473ef8cc19',1793613604123456789,'52:54:00:aa:00:01','10.20.0.10','tftp','file','snponly.efi',1048576,1048576,1468,16,1,'','null');
INSERT INTO "boot_events" VALUES(3,'0e187a4f-c9bc-44fc-8b7f-edebae9e3265',1793613605123456789,'','10.21.0.20','http','file','/boot/arm64/initrd',4096,16777216,0,0,0,'connection reset','null');
CREATE TABLE events (
		seq     INTEGER PRIMARY KEY AUTOINCREMENT,
		time    INTEGER NOT NULL,
		node_id TEXT NOT NULL,
		actor   TEXT NOT NULL,
		kind    TEXT NOT NULL,
		from_state TEXT NOT NULL,
		to_state   TEXT NOT NULL,
		reason  TEXT NOT NULL,
		message TEXT NOT NULL
	);
INSERT INTO "events" VALUES(1,1793614200123456789,'cd7868c4-3335-4dc7-a6ff-c7473ef8cc19','user:admin','transition','discovered','inspecting','fixture step','');
INSERT INTO "events" VALUES(2,1793614260123456789,'cd7868c4-3335-4dc7-a6ff-c7473ef8cc19','user:admin','transition','inspecting','available','fixture step','');
INSERT INTO "events" VALUES(3,1793614320123456789,'0e187a4f-c9bc-44fc-8b7f-edebae9e3265','user:admin','transition','discovered','inspecting','fixture step','');
INSERT INTO "events" VALUES(4,1793614380123456789,'0e187a4f-c9bc-44fc-8b7f-edebae9e3265','user:admin','transition','inspecting','failed','fixture step','');
INSERT INTO "events" VALUES(5,1793614800123456789,'','system','audit','','','','token created');
INSERT INTO "events" VALUES(6,1793614860123456789,'0af3e858-3c3a-47a9-9fe1-333a453375b2','token:x','action','','','power on','ipmi');
CREATE TABLE images (
		name    TEXT PRIMARY KEY,
		arch    TEXT NOT NULL,
		format  TEXT NOT NULL,
		size    INTEGER NOT NULL,
		sha256  TEXT NOT NULL,
		source  TEXT NOT NULL,
		created INTEGER NOT NULL
	, raw_size INTEGER NOT NULL DEFAULT 0, raw_sha256 TEXT NOT NULL DEFAULT '');
INSERT INTO "images" VALUES('debian-13-amd64','x86_64','raw.zst',536870912,'1f2e','https://images.example/debian-13.qcow2',1793615400123456789,4294967296,'3d4c');
INSERT INTO "images" VALUES('ubuntu-arm','aarch64','raw',2147483648,'5b6a','upload:ubuntu.img',1793615460123456789,0,'');
CREATE TABLE tasks (
		id      TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		kind    TEXT NOT NULL,
		state   TEXT NOT NULL,
		params  BLOB,
		result  BLOB,
		error   TEXT NOT NULL,
		created INTEGER NOT NULL,
		updated INTEGER NOT NULL
	);
INSERT INTO "tasks" VALUES('dbf8a915-db7e-4f1b-9234-50b1564f2ada','cd7868c4-3335-4dc7-a6ff-c7473ef8cc19','inspect','done',X'7B226275726E696E223A66616C73657D',X'7B226469736B73223A327D','',1793614260123456789,1793614440123456789);
INSERT INTO "tasks" VALUES('673d4e68-0780-480b-87c1-5d40038ca729','0e187a4f-c9bc-44fc-8b7f-edebae9e3265','wipe','pending',NULL,NULL,'',1793614500123456789,1793614500123456789);
INSERT INTO "tasks" VALUES('06413cf5-6720-4f7e-8fb1-e9d137540936','0e187a4f-c9bc-44fc-8b7f-edebae9e3265','burnin','failed',X'7B22686F757273223A347D',NULL,'memory error on DIMM B2',1793614560123456789,1793614620123456789);
CREATE TABLE users (
		name          TEXT PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       INTEGER NOT NULL
	);
INSERT INTO "users" VALUES('admin','admin','$2a$10$abcdefghijklmnopqrstuv',1793617200123456789);
INSERT INTO "users" VALUES('tech1','tech','$2a$10$zyxwvutsrqponmlkjihgfe',1793617201123456789);
CREATE TABLE tokens (
		id         TEXT PRIMARY KEY,
		hash       TEXT NOT NULL UNIQUE,
		kind       TEXT NOT NULL,
		name       TEXT NOT NULL,
		role       TEXT NOT NULL,
		user_name  TEXT NOT NULL,
		node_id    TEXT NOT NULL,
		node_state TEXT NOT NULL,
		created    INTEGER NOT NULL,
		expires    INTEGER NOT NULL
	);
INSERT INTO "tokens" VALUES('tok-api','a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1','api','ci','readonly','admin','','',1793620800123456789,0);
INSERT INTO "tokens" VALUES('tok-session','b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2','session','','tech','tech1','','',1793620800123456789,4102444800000000000);
INSERT INTO "tokens" VALUES('tok-agent','c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3','agent','','agent','','cd7868c4-3335-4dc7-a6ff-c7473ef8cc19','available',1793624400123456789,0);
DELETE FROM sqlite_sequence;
INSERT INTO "sqlite_sequence" VALUES('events',6);
INSERT INTO "sqlite_sequence" VALUES('boot_events',3);
CREATE INDEX interfaces_node ON interfaces(node_id);
CREATE INDEX leases_mac ON leases(mac, subnet);
CREATE INDEX boot_events_node ON boot_events(node_id, seq);
CREATE INDEX events_node ON events(node_id, seq);
CREATE INDEX tasks_node ON tasks(node_id, created);
CREATE INDEX tokens_node ON tokens(node_id);

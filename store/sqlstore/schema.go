package sqlstore

// The schema of each engine, as migrations applied in order, each once;
// never edit a released one. The tables are the same on both: times are
// int64 nanoseconds since the epoch, JSON lists are text; only the column
// types differ (INTEGER and BLOB in SQLite, BIGINT, BOOLEAN and BYTEA in
// PostgreSQL) and the history (SQLite's grew in three steps).

// sqliteMigrations build the SQLite schema.
var sqliteMigrations = []string{
	`CREATE TABLE nodes (
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
	);
	CREATE TABLE interfaces (
		mac     TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
	);
	CREATE INDEX interfaces_node ON interfaces(node_id);
	CREATE TABLE leases (
		ip       TEXT PRIMARY KEY,
		mac      TEXT NOT NULL,
		subnet   TEXT NOT NULL,
		state    TEXT NOT NULL,
		expires  INTEGER NOT NULL,
		hostname TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX leases_mac ON leases(mac, subnet);
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
	CREATE INDEX boot_events_node ON boot_events(node_id, seq);`,
	`ALTER TABLE nodes ADD COLUMN kind TEXT NOT NULL DEFAULT 'metal';
	ALTER TABLE nodes ADD COLUMN rack TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE nodes ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE nodes ADD COLUMN owner TEXT NOT NULL DEFAULT 'rackboot';
	ALTER TABLE nodes ADD COLUMN inventory BLOB;
	ALTER TABLE nodes ADD COLUMN gpu_models TEXT NOT NULL DEFAULT '[]';
	ALTER TABLE nodes ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
	ALTER TABLE nodes ADD COLUMN state_changed INTEGER NOT NULL DEFAULT 0;
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
	CREATE INDEX events_node ON events(node_id, seq);
	CREATE TABLE images (
		name    TEXT PRIMARY KEY,
		arch    TEXT NOT NULL,
		format  TEXT NOT NULL,
		size    INTEGER NOT NULL,
		sha256  TEXT NOT NULL,
		source  TEXT NOT NULL,
		created INTEGER NOT NULL
	);
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
	CREATE INDEX tasks_node ON tasks(node_id, created);
	CREATE TABLE users (
		name          TEXT PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       INTEGER NOT NULL
	);
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
	CREATE INDEX tokens_node ON tokens(node_id);`,
	`ALTER TABLE images ADD COLUMN raw_size INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE images ADD COLUMN raw_sha256 TEXT NOT NULL DEFAULT '';`,
	`CREATE TABLE bmcs (
		node_id     TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		url         TEXT NOT NULL,
		user_name   TEXT NOT NULL,
		password    BLOB,
		fingerprint TEXT NOT NULL DEFAULT '',
		updated     INTEGER NOT NULL
	);`,
	`CREATE TABLE power_states (
		node_id TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		state   TEXT NOT NULL,
		error   TEXT NOT NULL DEFAULT '',
		checked INTEGER NOT NULL,
		changed INTEGER NOT NULL
	);`,
	`CREATE TABLE hypervisors (
		node_id      TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		uri          TEXT NOT NULL,
		gpu_mode     TEXT NOT NULL DEFAULT '',
		gpu_profile  TEXT NOT NULL DEFAULT '',
		vgpu_max     INTEGER NOT NULL DEFAULT 0,
		cpu_ratio    REAL NOT NULL,
		ram_ratio    REAL NOT NULL,
		reserved_mib INTEGER NOT NULL,
		drained      INTEGER NOT NULL,
		native       TEXT NOT NULL DEFAULT '[]',
		emulated     TEXT NOT NULL DEFAULT '[]',
		bridge       TEXT NOT NULL DEFAULT '',
		vlan         INTEGER NOT NULL DEFAULT 0,
		pool         TEXT NOT NULL DEFAULT '',
		created      INTEGER NOT NULL,
		updated      INTEGER NOT NULL
	);
	CREATE TABLE flavors (
		name        TEXT PRIMARY KEY,
		vcpus       INTEGER NOT NULL,
		memory_mib  INTEGER NOT NULL,
		disk_gib    INTEGER NOT NULL,
		arch        TEXT NOT NULL,
		gpu_model   TEXT NOT NULL DEFAULT '',
		gpu_mode    TEXT NOT NULL DEFAULT '',
		gpu_profile TEXT NOT NULL DEFAULT '',
		gpu_count   INTEGER NOT NULL DEFAULT 0,
		created     INTEGER NOT NULL
	);
	CREATE TABLE vms (
		node_id    TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		hypervisor TEXT NOT NULL REFERENCES hypervisors(node_id),
		flavor     TEXT NOT NULL DEFAULT '',
		image      TEXT NOT NULL DEFAULT '',
		arch       TEXT NOT NULL,
		vcpus      INTEGER NOT NULL,
		memory_mib INTEGER NOT NULL,
		disk_gib   INTEGER NOT NULL,
		numa       INTEGER NOT NULL,
		mac        TEXT NOT NULL,
		uuid       TEXT NOT NULL,
		volume     TEXT NOT NULL,
		note       TEXT NOT NULL DEFAULT '',
		created    INTEGER NOT NULL
	);
	CREATE INDEX vms_hypervisor ON vms(hypervisor);
	CREATE TABLE vm_devices (
		hypervisor TEXT NOT NULL,
		device     TEXT NOT NULL,
		slot       INTEGER NOT NULL,
		vm         TEXT NOT NULL REFERENCES vms(node_id) ON DELETE CASCADE,
		gpu        TEXT NOT NULL,
		kind       TEXT NOT NULL,
		profile    TEXT NOT NULL DEFAULT '',
		mdev       TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (hypervisor, device, slot)
	);
	CREATE INDEX vm_devices_vm ON vm_devices(vm);`,
	`CREATE TABLE hypervisor_agents (
		node_id TEXT PRIMARY KEY REFERENCES hypervisors(node_id) ON DELETE CASCADE,
		booted  INTEGER NOT NULL,
		applied TEXT NOT NULL,
		gpus    BLOB,
		errors  TEXT NOT NULL,
		version TEXT NOT NULL,
		seen    INTEGER NOT NULL
	);`,
	// A vGPU or MIG slot of a card is one VM's whether it is an mdev
	// (device is the card) or a vendor VFIO virtual function (device is
	// the function), and a function is one VM's whatever its slot: the
	// primary key (hypervisor, device, slot) saw neither, and two
	// servers on one database could place two VMs on one function.
	`CREATE UNIQUE INDEX vm_devices_gpu_slot ON vm_devices(hypervisor, gpu, slot) WHERE kind IN ('vgpu', 'mig');
	CREATE UNIQUE INDEX vm_devices_vf ON vm_devices(hypervisor, device) WHERE kind IN ('vgpu', 'mig') AND device <> gpu;`,
	// A hypervisor agent's reports are counted, and how long each of its
	// errors has lasted, so that an error said in three reports in a row
	// is told from a hiccup by whoever reads only some of them.
	`ALTER TABLE hypervisor_agents ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE hypervisor_agents ADD COLUMN error_since TEXT NOT NULL DEFAULT '[]';`,
	// Each inventory set is counted, so that placement parses a
	// hypervisor's inventory again only when it changed.
	// nodes_fleet lets a hypervisor's few fields be read without its
	// inventory.
	`ALTER TABLE nodes ADD COLUMN inventory_rev INTEGER NOT NULL DEFAULT 0;
	UPDATE nodes SET inventory_rev = 1 WHERE inventory IS NOT NULL;
	CREATE INDEX nodes_fleet ON nodes(id, inventory_rev, name, arch);`,
}

// postgresMigrations build the PostgreSQL schema. nodes_name makes node
// names unique across servers that name nodes at once.
var postgresMigrations = []string{
	`CREATE TABLE nodes (
		id            TEXT PRIMARY KEY,
		name          TEXT NOT NULL DEFAULT '',
		arch          TEXT NOT NULL DEFAULT '',
		firmware      TEXT NOT NULL DEFAULT '',
		client_arch   INTEGER NOT NULL DEFAULT 0,
		state         TEXT NOT NULL,
		secure_boot   BOOLEAN,
		uuid          TEXT NOT NULL DEFAULT '',
		first_seen    BIGINT NOT NULL,
		last_seen     BIGINT NOT NULL,
		kind          TEXT NOT NULL DEFAULT 'metal',
		rack          TEXT NOT NULL DEFAULT '',
		position      INTEGER NOT NULL DEFAULT 0,
		tags          TEXT NOT NULL DEFAULT '[]',
		owner         TEXT NOT NULL DEFAULT 'rackboot',
		inventory     BYTEA,
		gpu_models    TEXT NOT NULL DEFAULT '[]',
		last_error    TEXT NOT NULL DEFAULT '',
		state_changed BIGINT NOT NULL DEFAULT 0
	);
	CREATE UNIQUE INDEX nodes_name ON nodes(name) WHERE name <> '';
	CREATE INDEX nodes_first_seen ON nodes(first_seen, id);
	CREATE TABLE interfaces (
		mac     TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE
	);
	CREATE INDEX interfaces_node ON interfaces(node_id);
	CREATE TABLE leases (
		ip       TEXT PRIMARY KEY,
		mac      TEXT NOT NULL,
		subnet   TEXT NOT NULL,
		state    TEXT NOT NULL,
		expires  BIGINT NOT NULL,
		hostname TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX leases_mac ON leases(mac, subnet);
	CREATE TABLE boot_events (
		seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		node_id     TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		time        BIGINT NOT NULL,
		mac         TEXT NOT NULL,
		ip          TEXT NOT NULL,
		proto       TEXT NOT NULL,
		kind        TEXT NOT NULL,
		file        TEXT NOT NULL,
		bytes       BIGINT NOT NULL,
		size        BIGINT NOT NULL,
		block_size  INTEGER NOT NULL,
		window_size INTEGER NOT NULL,
		complete    BOOLEAN NOT NULL,
		error       TEXT NOT NULL,
		options     TEXT NOT NULL
	);
	CREATE INDEX boot_events_node ON boot_events(node_id, seq);
	CREATE TABLE events (
		seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		time       BIGINT NOT NULL,
		node_id    TEXT NOT NULL,
		actor      TEXT NOT NULL,
		kind       TEXT NOT NULL,
		from_state TEXT NOT NULL,
		to_state   TEXT NOT NULL,
		reason     TEXT NOT NULL,
		message    TEXT NOT NULL
	);
	CREATE INDEX events_node ON events(node_id, seq);
	CREATE TABLE images (
		name       TEXT PRIMARY KEY,
		arch       TEXT NOT NULL,
		format     TEXT NOT NULL,
		size       BIGINT NOT NULL,
		sha256     TEXT NOT NULL,
		raw_size   BIGINT NOT NULL DEFAULT 0,
		raw_sha256 TEXT NOT NULL DEFAULT '',
		source     TEXT NOT NULL,
		created    BIGINT NOT NULL
	);
	CREATE TABLE tasks (
		id      TEXT PRIMARY KEY,
		node_id TEXT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
		kind    TEXT NOT NULL,
		state   TEXT NOT NULL,
		params  BYTEA,
		result  BYTEA,
		error   TEXT NOT NULL,
		created BIGINT NOT NULL,
		updated BIGINT NOT NULL
	);
	CREATE INDEX tasks_node ON tasks(node_id, created);
	CREATE TABLE users (
		name          TEXT PRIMARY KEY,
		role          TEXT NOT NULL,
		password_hash TEXT NOT NULL,
		created       BIGINT NOT NULL
	);
	CREATE TABLE tokens (
		id         TEXT PRIMARY KEY,
		hash       TEXT NOT NULL UNIQUE,
		kind       TEXT NOT NULL,
		name       TEXT NOT NULL,
		role       TEXT NOT NULL,
		user_name  TEXT NOT NULL,
		node_id    TEXT NOT NULL,
		node_state TEXT NOT NULL,
		created    BIGINT NOT NULL,
		expires    BIGINT NOT NULL
	);
	CREATE INDEX tokens_node ON tokens(node_id);
	CREATE INDEX tokens_user ON tokens(user_name);`,
	`CREATE TABLE bmcs (
		node_id     TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		url         TEXT NOT NULL,
		user_name   TEXT NOT NULL,
		password    BYTEA,
		fingerprint TEXT NOT NULL DEFAULT '',
		updated     BIGINT NOT NULL
	);`,
	`CREATE TABLE power_states (
		node_id TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		state   TEXT NOT NULL,
		error   TEXT NOT NULL DEFAULT '',
		checked BIGINT NOT NULL,
		changed BIGINT NOT NULL
	);`,
	`CREATE TABLE hypervisors (
		node_id      TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		uri          TEXT NOT NULL,
		gpu_mode     TEXT NOT NULL DEFAULT '',
		gpu_profile  TEXT NOT NULL DEFAULT '',
		vgpu_max     INTEGER NOT NULL DEFAULT 0,
		cpu_ratio    DOUBLE PRECISION NOT NULL,
		ram_ratio    DOUBLE PRECISION NOT NULL,
		reserved_mib BIGINT NOT NULL,
		drained      BOOLEAN NOT NULL,
		native       TEXT NOT NULL DEFAULT '[]',
		emulated     TEXT NOT NULL DEFAULT '[]',
		bridge       TEXT NOT NULL DEFAULT '',
		vlan         INTEGER NOT NULL DEFAULT 0,
		pool         TEXT NOT NULL DEFAULT '',
		created      BIGINT NOT NULL,
		updated      BIGINT NOT NULL
	);
	CREATE TABLE flavors (
		name        TEXT PRIMARY KEY,
		vcpus       INTEGER NOT NULL,
		memory_mib  BIGINT NOT NULL,
		disk_gib    INTEGER NOT NULL,
		arch        TEXT NOT NULL,
		gpu_model   TEXT NOT NULL DEFAULT '',
		gpu_mode    TEXT NOT NULL DEFAULT '',
		gpu_profile TEXT NOT NULL DEFAULT '',
		gpu_count   INTEGER NOT NULL DEFAULT 0,
		created     BIGINT NOT NULL
	);
	CREATE TABLE vms (
		node_id    TEXT PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
		hypervisor TEXT NOT NULL REFERENCES hypervisors(node_id),
		flavor     TEXT NOT NULL DEFAULT '',
		image      TEXT NOT NULL DEFAULT '',
		arch       TEXT NOT NULL,
		vcpus      INTEGER NOT NULL,
		memory_mib BIGINT NOT NULL,
		disk_gib   INTEGER NOT NULL,
		numa       INTEGER NOT NULL,
		mac        TEXT NOT NULL,
		uuid       TEXT NOT NULL,
		volume     TEXT NOT NULL,
		note       TEXT NOT NULL DEFAULT '',
		created    BIGINT NOT NULL
	);
	CREATE INDEX vms_hypervisor ON vms(hypervisor);
	CREATE TABLE vm_devices (
		hypervisor TEXT NOT NULL,
		device     TEXT NOT NULL,
		slot       INTEGER NOT NULL,
		vm         TEXT NOT NULL REFERENCES vms(node_id) ON DELETE CASCADE,
		gpu        TEXT NOT NULL,
		kind       TEXT NOT NULL,
		profile    TEXT NOT NULL DEFAULT '',
		mdev       TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (hypervisor, device, slot)
	);
	CREATE INDEX vm_devices_vm ON vm_devices(vm);`,
	`CREATE TABLE hypervisor_agents (
		node_id TEXT PRIMARY KEY REFERENCES hypervisors(node_id) ON DELETE CASCADE,
		booted  BIGINT NOT NULL,
		applied TEXT NOT NULL,
		gpus    BYTEA,
		errors  TEXT NOT NULL,
		version TEXT NOT NULL,
		seen    BIGINT NOT NULL
	);`,
	// A vGPU or MIG slot of a card is one VM's whether it is an mdev
	// (device is the card) or a vendor VFIO virtual function (device is
	// the function), and a function is one VM's whatever its slot: the
	// primary key (hypervisor, device, slot) saw neither, and two
	// servers on one database could place two VMs on one function.
	`CREATE UNIQUE INDEX vm_devices_gpu_slot ON vm_devices(hypervisor, gpu, slot) WHERE kind IN ('vgpu', 'mig');
	CREATE UNIQUE INDEX vm_devices_vf ON vm_devices(hypervisor, device) WHERE kind IN ('vgpu', 'mig') AND device <> gpu;`,
	`ALTER TABLE hypervisor_agents ADD COLUMN round BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE hypervisor_agents ADD COLUMN error_since TEXT NOT NULL DEFAULT '[]';`,
	`ALTER TABLE nodes ADD COLUMN inventory_rev BIGINT NOT NULL DEFAULT 0;
	UPDATE nodes SET inventory_rev = 1 WHERE inventory IS NOT NULL;
	CREATE INDEX nodes_fleet ON nodes(id, inventory_rev, name, arch);`,
}

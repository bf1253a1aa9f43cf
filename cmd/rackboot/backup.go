package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/rackboot/rackboot/appliance"
)

// backupCmd is `rackboot backup FILE` and `rackboot restore FILE`, run on
// the appliance against its data dir.
func backupCmd(ctx context.Context, op string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(op, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "the server's YAML config file, for its data_dir and db")
	dataDir := fs.String("data-dir", "", "the appliance's data dir (default: the config's, else $RACKBOOT_DATA_DIR, else ./data)")
	db := fs.String("db", "", "the server's database when it is PostgreSQL (env RACKBOOT_DB): then pg_dump and pg_restore do this")
	fs.Usage = func() {
		if op == "backup" {
			fmt.Fprint(fs.Output(), `Usage: rackboot backup FILE [--data-dir DIR] [--config FILE]

Writes a consistent copy of the SQLite database (DATA_DIR/rackboot.db) to FILE,
mode 0600, while the server goes on serving. FILE must not exist. The copy is
checked (SQLite's quick_check, rackboot's tables) before it gets its name.
For PostgreSQL use pg_dump.

Flags:
`)
		} else {
			fmt.Fprint(fs.Output(), `Usage: rackboot restore FILE [--data-dir DIR] [--config FILE]

Puts the backup FILE in place as DATA_DIR/rackboot.db. The server must be
stopped: restore takes its lock (DATA_DIR/rackboot.lock) and refuses while it
is held. FILE must be a sound rackboot database no newer than this rackboot.
A database already there is kept as rackboot.db.before-restore-TIME.
For PostgreSQL use pg_restore, with every server stopped.

Flags:
`)
		}
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{op + " FILE [--data-dir DIR] [--config FILE]"}
	}
	var cfg appliance.Config
	if *configPath != "" {
		if cfg, err = appliance.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["data-dir"] {
		cfg.DataDir = *dataDir
	}
	if cfg.DataDir == "" {
		cfg.DataDir = envOr("RACKBOOT_DATA_DIR", "data")
	}
	if v := os.Getenv("RACKBOOT_DB"); v != "" && !set["db"] {
		cfg.DB = v
	}
	if set["db"] {
		cfg.DB = *db
	}
	file := pos[0]
	if op == "backup" {
		v, err := appliance.Backup(ctx, cfg.DB, cfg.DataDir, file)
		if err != nil {
			return err
		}
		fi, err := os.Stat(file)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %d bytes, schema version %d\n", file, fi.Size(), v)
		return nil
	}
	aside, v, err := appliance.Restore(ctx, cfg.DB, cfg.DataDir, file)
	if err != nil {
		return err
	}
	if aside != "" {
		fmt.Fprintf(stdout, "kept the database that was there as %s\n", aside)
	}
	fmt.Fprintf(stdout, "restored %s (schema version %d) as the database of %s; start the server\n", file, v, cfg.DataDir)
	return nil
}

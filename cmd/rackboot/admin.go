package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/rackboot/rackboot/api"
	"github.com/rackboot/rackboot/appliance"
)

func imageCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"image: want add, list, show, delete or build"}
	}
	sub, args := args[0], args[1:]
	if sub == "build" {
		return imageBuildCmd(ctx, args, stdout, stderr)
	}
	fs := flag.NewFlagSet("image "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var arch, file, src, sum, format string
	if sub == "add" {
		fs.StringVar(&arch, "arch", "", "x86_64 or aarch64 (required)")
		fs.StringVar(&file, "file", "", "upload this file (.raw, .img, .raw.gz, .raw.zst, .raw.xz or .qcow2)")
		fs.StringVar(&src, "url", "", "or have the server download this http(s) URL")
		fs.StringVar(&sum, "sha256", "", "the file's sha256, checked on arrival")
		fs.StringVar(&format, "format", "", "the format, when the file name does not say it")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if sub != "list" && len(pos) != 1 {
		return usageError{"image " + sub + ": which image?"}
	}
	switch sub {
	case "add":
		if arch == "" || (file == "") == (src == "") {
			return usageError{"image add NAME --arch x86_64|aarch64 (--file PATH | --url URL) [--sha256 HEX]"}
		}
		var im api.Image
		if src != "" {
			err = c.do(ctx, "POST", "/api/v1/images", api.NewImage{Name: pos[0], Arch: arch, URL: src, SHA256: sum, Format: format}, &im)
		} else {
			f, ferr := os.Open(file)
			if ferr != nil {
				return fmt.Errorf("image add: %w", ferr)
			}
			defer f.Close()
			q := url.Values{"name": {pos[0]}, "arch": {arch}, "sha256": {sum}, "filename": {filepath.Base(file)}, "format": {format}}
			// Uploads take as long as they take.
			c.http.Timeout = 0
			err = c.send(ctx, "POST", "/api/v1/images?"+q.Encode(), "application/octet-stream", f, &im)
		}
		if err != nil {
			return err
		}
		return c.print(stdout, im, func(tw *tabwriter.Writer) {
			fmt.Fprintf(tw, "image %s: %s, %s, %d bytes (%d raw), sha256 %s\n", im.Name, im.Arch, im.Format, im.Size, im.RawSize, im.SHA256)
		})
	case "list":
		var l api.ImageList
		if err := c.do(ctx, "GET", "/api/v1/images", nil, &l); err != nil {
			return err
		}
		return c.print(stdout, l.Items, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NAME\tARCH\tFORMAT\tSIZE\tSHA256\tCREATED")
			for _, im := range l.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.12s\t%s\n", im.Name, im.Arch, im.Format, im.Size, im.SHA256, ts(im.Created))
			}
		})
	case "show":
		var im api.Image
		if err := c.do(ctx, "GET", "/api/v1/images/"+url.PathEscape(pos[0]), nil, &im); err != nil {
			return err
		}
		return c.print(stdout, im, func(tw *tabwriter.Writer) {
			for _, kv := range [][2]string{{"Name", im.Name}, {"Arch", im.Arch}, {"Format", im.Format}, {"Size", fmt.Sprint(im.Size)},
				{"SHA256", im.SHA256}, {"Source", im.Source}, {"Created", ts(im.Created)}} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
			}
		})
	case "delete":
		if err := c.do(ctx, "DELETE", "/api/v1/images/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted image %s\n", pos[0])
		return nil
	}
	return usageError{fmt.Sprintf("image: unknown command %q", sub)}
}

func tokenCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"token: want create, list, delete or rotate-bootstrap"}
	}
	sub, args := args[0], args[1:]
	if sub == "rotate-bootstrap" {
		return rotateBootstrap(ctx, args, stdout, stderr)
	}
	fs := flag.NewFlagSet("token "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var nt api.NewToken
	if sub == "create" {
		fs.StringVar(&nt.Role, "role", "", "admin, tech or readonly (required)")
		fs.StringVar(&nt.Name, "name", "", "what the token is for (required)")
		fs.StringVar(&nt.TTL, "ttl", "", "lifetime such as 720h (default: no expiry)")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		if nt.Name == "" && len(pos) == 1 {
			nt.Name = pos[0]
		}
		if nt.Role == "" || nt.Name == "" {
			return usageError{"token create --name NAME --role admin|tech|readonly [--ttl 720h]"}
		}
		var ct api.CreatedToken
		if err := c.do(ctx, "POST", "/api/v1/tokens", nt, &ct); err != nil {
			return err
		}
		if c.output == "json" {
			return c.print(stdout, ct, nil)
		}
		// The secret alone on stdout, so scripts can capture it; the
		// rest on stderr.
		fmt.Fprintf(stderr, "token %s (%s, role %s): shown once, keep it safe\n", ct.Token.ID, ct.Token.Name, ct.Token.Role)
		fmt.Fprintln(stdout, ct.Secret)
		return nil
	case "list":
		var l api.TokenList
		if err := c.do(ctx, "GET", "/api/v1/tokens", nil, &l); err != nil {
			return err
		}
		return c.print(stdout, l.Items, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tUSER\tCREATED\tEXPIRES")
			for _, t := range l.Items {
				exp := "never"
				if t.Expires != nil {
					exp = ts(*t.Expires)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, orDash(t.User), ts(t.Created), exp)
			}
		})
	case "delete":
		if len(pos) != 1 {
			return usageError{"token delete ID"}
		}
		if err := c.do(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked token %s\n", pos[0])
		return nil
	}
	return usageError{fmt.Sprintf("token: unknown command %q", sub)}
}

// rotateBootstrap replaces the data dir's bootstrap admin token. It runs
// on the appliance, on its data dir and database: it is how an operator
// gets back in after the token leaked, when no other admin token works.
func rotateBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token rotate-bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "the appliance's data dir")
	db := fs.String("db", "", "the appliance's postgres:// database (default: SQLite in the data dir)")
	if pos, err := parseArgs(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{"token rotate-bootstrap [--data-dir DIR] [--db postgres://...]"}
	}
	path, err := appliance.RotateBootstrapToken(ctx, *db, *dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a new bootstrap admin token to %s; the old one no longer works\n", path)
	return nil
}

// secretsCmd manages the key file BMC passwords are encrypted with. It
// runs on the appliance, on its data dir and database.
func secretsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		return usageError{"secrets: want rotate"}
	}
	fs := flag.NewFlagSet("secrets rotate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", envOr("RACKBOOT_DATA_DIR", "data"), "the appliance's data dir")
	db := fs.String("db", os.Getenv("RACKBOOT_DB"), "the appliance's postgres:// database (default: SQLite in the data dir; env RACKBOOT_DB)")
	keyFile := fs.String("secret-key-file", "", "the key file (default DATA_DIR/secret.key)")
	dropOld := fs.Bool("drop-old", false, "then remove the old keys from the file (only once every server sharing the database has the new file)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: rackboot secrets rotate [flags]\n\nAdds a new key at the head of the secret key file (the old keys stay, to open what they\nsealed) and re-encrypts every BMC password in the database with it. Servers sharing the\ndatabase need the new file before they can read the re-encrypted passwords.\n\nFlags:")
		fs.PrintDefaults()
	}
	if pos, err := parseArgs(fs, args[1:]); err != nil {
		return err
	} else if len(pos) > 0 {
		return usageError{"secrets rotate [--data-dir DIR] [--db postgres://...] [--secret-key-file F] [--drop-old]"}
	}
	res, err := appliance.RotateSecrets(ctx, *db, *dataDir, *keyFile, *dropOld)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new key %s at the head of %s; %d BMC passwords re-encrypted", res.NewKey, res.Path, res.Resealed)
	if res.Changed > 0 {
		fmt.Fprintf(stdout, " (%d changed meanwhile, left as set)", res.Changed)
	}
	if len(res.Dropped) > 0 {
		fmt.Fprintf(stdout, "; dropped old keys %s", strings.Join(res.Dropped, ", "))
	}
	fmt.Fprintln(stdout)
	return nil
}

func userCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"user: want add, list or delete"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("user "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	var role, pwFile string
	if sub == "add" {
		fs.StringVar(&role, "role", "", "admin, tech or readonly (required)")
		fs.StringVar(&pwFile, "password-file", "", "read the password from this file (default: the first line of stdin)")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		if len(pos) != 1 || role == "" {
			return usageError{"user add NAME --role admin|tech|readonly [--password-file FILE]"}
		}
		var pw string
		if pwFile != "" {
			b, err := os.ReadFile(pwFile)
			if err != nil {
				return fmt.Errorf("user add: %w", err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
		} else {
			fmt.Fprintf(stderr, "password for %s: ", pos[0])
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && line == "" {
				return fmt.Errorf("user add: reading the password: %w", err)
			}
			pw = strings.TrimRight(line, "\r\n")
			fmt.Fprintln(stderr)
		}
		var u api.User
		if err := c.do(ctx, "POST", "/api/v1/users", api.NewUser{Name: pos[0], Password: pw, Role: role}, &u); err != nil {
			return err
		}
		return c.print(stdout, u, func(tw *tabwriter.Writer) { fmt.Fprintf(tw, "user %s has role %s\n", u.Name, u.Role) })
	case "list":
		var l api.UserList
		if err := c.do(ctx, "GET", "/api/v1/users", nil, &l); err != nil {
			return err
		}
		return c.print(stdout, l.Items, func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
			for _, u := range l.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, ts(u.Created))
			}
		})
	case "delete":
		if len(pos) != 1 {
			return usageError{"user delete NAME"}
		}
		if err := c.do(ctx, "DELETE", "/api/v1/users/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deleted user %s\n", pos[0])
		return nil
	}
	return usageError{fmt.Sprintf("user: unknown command %q", sub)}
}

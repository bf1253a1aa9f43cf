package power

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Endpoint
		err  string
	}{
		{"ipmi://10.0.0.5", Endpoint{Kind: "ipmi", Host: "10.0.0.5", Port: 623}, ""},
		{"ipmi://bmc-r12-07.example:6230", Endpoint{Kind: "ipmi", Host: "bmc-r12-07.example", Port: 6230}, ""},
		{"ipmi://[fd00::5]", Endpoint{Kind: "ipmi", Host: "fd00::5", Port: 623}, ""},
		{"redfish://10.0.0.6", Endpoint{Kind: "redfish", Host: "10.0.0.6", Port: 443, HTTPS: true}, ""},
		{"redfish://10.0.0.6/redfish/v1/Systems/System.Embedded.1", Endpoint{Kind: "redfish", Host: "10.0.0.6", Port: 443, HTTPS: true, System: "/redfish/v1/Systems/System.Embedded.1"}, ""},
		{"redfish+http://127.0.0.1:8000", Endpoint{Kind: "redfish", Host: "127.0.0.1", Port: 8000}, ""},
		{"ipmi://admin:pw@10.0.0.5", Endpoint{}, "credentials do not go in the URL"},
		{"ipmi://10.0.0.5/x", Endpoint{}, "no path"},
		{"ipmi://10.0.0.5:99999", Endpoint{}, "out of range"},
		{"ipmi://", Endpoint{}, "no host"},
		{"http://10.0.0.5", Endpoint{}, "want ipmi://"},
		{"10.0.0.5", Endpoint{}, "want ipmi://"},
		{"redfish://10.0.0.6/redfish/v1/Chassis/1", Endpoint{}, "/redfish/v1/Systems/ID"},
		{"ipmi://10.0.0.5?x=1", Endpoint{}, "no query"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseURL = %+v, %v; want an error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Fatalf("(-want +got):\n%s", d)
			}
			if again, err := ParseURL(got.String()); err != nil || again != got {
				t.Errorf("String %q does not parse back: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseActionDevice(t *testing.T) {
	for _, a := range Actions {
		if got, err := ParseAction(string(a)); err != nil || got != a {
			t.Errorf("ParseAction(%q) = %q, %v", a, got, err)
		}
	}
	if _, err := ParseAction("status"); err == nil {
		t.Error("status is not an action")
	}
	if _, err := ParseDevice("cdrom"); err == nil {
		t.Error("cdrom is not a device rackboot sets")
	}
}

func TestDialRefusals(t *testing.T) {
	if _, err := Dial(Config{URL: "redfish://10.0.0.6", Fingerprint: "ab:cd"}); err == nil || !strings.Contains(err.Error(), "redfish://10.0.0.6:443") {
		t.Fatalf("Dial redfish with a short pin: %v", err)
	}
	if _, err := Dial(Config{URL: "ipmi://10.0.0.5", User: strings.Repeat("u", 17)}); err == nil {
		t.Fatal("a 17-character IPMI user name was taken")
	}
}

func TestRetry(t *testing.T) {
	c := Config{Timeout: 50 * time.Millisecond, Attempts: 3, Backoff: time.Millisecond}
	ctx := context.Background()
	tries := 0
	err := retry(ctx, c, "ipmi://x:623", "power on", func(ctx context.Context) error {
		tries++
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a try without a deadline")
		}
		return noAnswer(errors.New("timeout"))
	})
	var be *BMCError
	if tries != 3 || !errors.Is(err, ErrNoAnswer) || !errors.As(err, &be) || be.BMC != "ipmi://x:623" || !strings.Contains(err.Error(), "3 tries") {
		t.Fatalf("after %d tries: %v", tries, err)
	}
	tries = 0
	err = retry(ctx, c, "ipmi://x:623", "power on", func(context.Context) error {
		tries++
		if tries == 2 {
			return nil
		}
		return noAnswer(errors.New("timeout"))
	})
	if err != nil || tries != 2 {
		t.Fatalf("a second try that works: %d tries, %v", tries, err)
	}
	tries = 0
	err = retry(ctx, c, "ipmi://x:623", "power state", func(context.Context) error {
		tries++
		return ErrAuth
	})
	if tries != 1 || !errors.Is(err, ErrAuth) {
		t.Fatalf("a refused password was tried %d times: %v", tries, err)
	}
	tries = 0
	err = retry(ctx, c, "ipmi://x:623", "power cycle", func(context.Context) error {
		tries++
		return final{noAnswer(errors.New("sent, no reply"))}
	})
	if tries != 1 || !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("a final error was tried %d times: %v", tries, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	tries = 0
	retry(cctx, c, "ipmi://x:623", "power on", func(context.Context) error {
		tries++
		return noAnswer(errors.New("timeout"))
	})
	if tries != 1 {
		t.Fatalf("a cancelled call was tried %d times", tries)
	}
}

package lab

import (
	"fmt"
	"strings"
)

// Check is Require for programs rather than tests: an error naming what
// is missing and the Debian packages that bring it.
func Check(needs ...string) error {
	if m := missing(needs, onHost); len(m) > 0 {
		return fmt.Errorf("missing on this machine: %s (%s)", strings.Join(m, ", "), installHint(m))
	}
	return nil
}

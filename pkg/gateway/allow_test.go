package gateway

import (
	"testing"

	"github.com/mcpgw/mcpgw/pkg/config"
)

// TestAllowLevels: every allow the config admits is the access level of
// that name, and nothing else is admitted.
func TestAllowLevels(t *testing.T) {
	for _, s := range []string{"none", "read", "read-write"} {
		_, err := config.Parse("[[bus]]\nname = \"l\"\nport = \"/dev/null\"\nunits = [1]\n[[access]]\nallow = \"" + s + "\"\n")
		if err != nil {
			t.Errorf("allow %q: %v", s, err)
		}
		if lv, ok := allowLevel[s]; !ok || lv.String() != s {
			t.Errorf("allow %q: level %v (%v)", s, lv, ok)
		}
	}
	for _, bad := range []string{"", "rw", "write", "READ"} {
		if _, err := config.Parse("[[bus]]\nname = \"l\"\nport = \"/dev/null\"\nunits = [1]\n[[access]]\nallow = \"" + bad + "\"\n"); err == nil {
			t.Errorf("allow %q accepted", bad)
		}
	}
	if len(allowLevel) != 3 {
		t.Errorf("%d levels", len(allowLevel))
	}
}

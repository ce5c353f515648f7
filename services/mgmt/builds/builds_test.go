package builds

import "testing"

func TestSplitKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		key, name, version string
		ok                 bool
	}{
		{"dayjs@1.11.13", "dayjs", "1.11.13", true},
		{"@types/node@22.1.0", "@types/node", "22.1.0", true},
		{"@scope/name@1.0.0-beta.1", "@scope/name", "1.0.0-beta.1", true},
		{"dayjs", "", "", false},
		{"@1.0.0", "", "", false},
	}
	for _, c := range cases {
		n, v, ok := splitKey(c.key)
		if n != c.name || v != c.version || ok != c.ok {
			t.Errorf("splitKey(%q) = %q, %q, %v; want %q, %q, %v", c.key, n, v, ok, c.name, c.version, c.ok)
		}
	}
}

func TestModuleError(t *testing.T) {
	t.Parallel()
	if got := moduleError("a@1.0.0", "npm error code E404"); got != "dependency a@1.0.0 failed to build: npm error code E404" {
		t.Errorf("moduleError = %q", got)
	}
	if got := moduleError("a@1.0.0", ""); got != "dependency a@1.0.0 failed to build: no reason recorded" {
		t.Errorf("moduleError without a reason = %q", got)
	}
}

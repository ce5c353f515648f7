package resolver

import (
	"errors"
	"testing"
)

func meta(latest string, versions ...string) Metadata {
	m := Metadata{Name: "pkg", DistTags: map[string]string{"latest": latest, "next": "3.0.0-beta.2"}, Versions: map[string]struct{}{}}
	for _, v := range versions {
		m.Versions[v] = struct{}{}
	}
	return m
}

func TestPick(t *testing.T) {
	t.Parallel()
	all := meta("2.4.1",
		"0.0.1", "0.0.2", "0.1.0", "0.1.5", "0.2.0",
		"1.0.0", "1.2.0", "1.2.3", "1.2.9", "1.3.0-rc.1", "1.3.0", "1.9.9",
		"2.0.0-alpha.1", "2.0.0", "2.4.1", "2.5.0", "3.0.0-beta.1", "3.0.0-beta.2", "not-semver")
	cases := []struct {
		spec, want string
	}{
		{"^1.2.0", "1.9.9"},
		{"^1.2.3", "1.9.9"},
		{"~1.2.0", "1.2.9"},
		{"~1.2", "1.2.9"},
		{"1.2.x", "1.2.9"},
		{"1.x", "1.9.9"},
		{"1", "1.9.9"},
		{"1.2", "1.2.9"},
		{"1.2.3", "1.2.3"},
		{"=1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"^0.1.0", "0.1.5"},
		{"^0.0.1", "0.0.1"},
		{"*", "2.4.1"},      // latest satisfies: npm installs latest, not 2.5.0
		{"", "2.4.1"},       // npm reads "" as *
		{"x", "2.4.1"},      // as *
		{"^2.0.0", "2.4.1"}, // latest preferred when it satisfies
		{">=2.5.0", "2.5.0"},
		{">=1.0.0 <1.3.0", "1.2.9"},   // space means AND
		{">= 1.0.0 < 1.3.0", "1.2.9"}, // npm allows a space after the operator
		{"1.0.0 - 1.2.3", "1.2.3"},    // hyphen range
		{"<1.0.0 || >=1.2.0 <1.3.0", "1.2.9"},
		{"^0.2.0 || ^1.0.0", "1.9.9"},
		{"~1.3.0-rc.1", "1.3.0"},              // the release beats its prerelease
		{">=1.3.0-rc.1 <1.3.0", "1.3.0-rc.1"}, // a range naming a prerelease of that tuple admits it
		{"^2.0.0-alpha.1", "2.4.1"},
		{"2.0.0-alpha.1", "2.0.0-alpha.1"},
		{"latest", "2.4.1"},
		{"next", "3.0.0-beta.2"},
		{">=2.5.0 <4.0.0", "2.5.0"}, // prereleases of 3.0.0 are not admitted: the range names none
	}
	for _, c := range cases {
		got, err := Pick(all, c.spec)
		if err != nil {
			t.Errorf("Pick(%q): %v", c.spec, err)
			continue
		}
		if got != c.want {
			t.Errorf("Pick(%q) = %s, want %s", c.spec, got, c.want)
		}
	}
}

func TestPickNoMatch(t *testing.T) {
	t.Parallel()
	m := meta("1.2.0", "1.0.0", "1.2.0", "2.0.0-rc.1")
	for _, spec := range []string{"^3.0.0", "~1.1.0", "beta", ">2.0.0-rc.1 <1.0.0", "^2.0.0"} {
		if v, err := Pick(m, spec); !errors.Is(err, ErrNoMatch) {
			t.Errorf("Pick(%q) = %q, %v; want ErrNoMatch", spec, v, err)
		}
	}
	m.DistTags["broken"] = "9.9.9"
	if _, err := Pick(m, "broken"); !errors.Is(err, ErrNoMatch) {
		t.Errorf("a tag naming an unpublished version must not resolve: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	long := "a"
	for len(long) <= MaxNameLen {
		long += "a"
	}
	cases := []struct {
		name string
		ok   bool
	}{
		{"lodash", true},
		{"dayjs", true},
		{"@types/node", true},
		{"@aws-sdk/client-s3", true},
		{"lodash.merge", true},
		{"a-b_c~d", true},
		{"", false},
		{"Lodash", false},
		{".hidden", false},
		{"_private", false},
		{"node_modules", false},
		{"favicon.ico", false},
		{"@scope", false},
		{"@scope/", false},
		{"@/name", false},
		{"a b", false},
		{" lodash", false},
		{"über", false},
		{"a/b", false},
		{"name?x", false},
		{"hello!", false},
		{long, false},
	}
	for _, c := range cases {
		if err := ValidateName(c.name); (err == nil) != c.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestValidateSpec(t *testing.T) {
	t.Parallel()
	cases := []struct {
		spec string
		ok   bool
	}{
		{"^1.2.3", true},
		{"~1.2", true},
		{"1.x", true},
		{"*", true},
		{"", true},
		{">=1.0.0 <2.0.0", true},
		{"1.0.0 - 2.0.0", true},
		{"^1.0.0 || ^2.0.0", true},
		{"latest", true},
		{"next", true},
		{"git+https://github.com/a/b.git", false},
		{"git://github.com/a/b", false},
		{"github:a/b", false},
		{"a/b", false},
		{"file:../x", false},
		{"https://example.com/x.tgz", false},
		{"npm:lodash@^4", false},
		{"link:../x", false},
		{"^1.2.3 && 4", false},
		{"$$$", false},
	}
	for _, c := range cases {
		if err := ValidateSpec("x", c.spec); (err == nil) != c.ok {
			t.Errorf("ValidateSpec(%q) = %v, want ok=%v", c.spec, err, c.ok)
		}
	}
}
